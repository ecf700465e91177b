"""The FastAPI application: `create_app(settings)` and `serve(settings, host, port)`.

Every route but /health (and the API docs, which hold no user data) needs `Authorization: Bearer <key>`
when server.api_key is set. Every error is JSON in OpenAI's shape, `{"error": {"message", "type",
"code"}}`, with a 4xx status for anything the caller can fix: kb's own errors (KBError) keep their
messages. A full queue (BusyError: server.max_queued answers running or waiting for the model) is 429 with
`Retry-After`, in the shape of OpenAI's own rate limit (type "requests", code "rate_limit_exceeded"), which
OpenAI clients retry after that many seconds. Upload bodies are limited to server.max_upload_mb before they are
parsed. This module leaves out the routes themselves (openai_routes.py, kb_routes.py) and what they share with it
(deps.py: the server state, the API-key check, the error responses each route declares).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.answer.service import AnswerService
from kb.config import Settings
from kb.errors import (
    BusyError,
    ConfigError,
    EmbedderMismatchError,
    EvidenceError,
    IndexFormatError,
    KBError,
    KBExistsError,
    KBNotFoundError,
    LockedError,
    MissingDependencyError,
    ModelError,
    ParseError,
    PassageNotFoundError,
    SourceChangedError,
    StorageError,
    UploadRefused,
)
from kb.uploads import upload_limit

from .deps import AUTH_ERRORS, require_key
from .kb_routes import router as kb_router
from .openai_routes import router as openai_router
from .schemas import NAME_RULE, Health

log = logging.getLogger("kb.server")

JSON_BODY_LIMIT = 4 << 20  # chat and search bodies; uploads have server.max_upload_mb

# kb error class -> (HTTP status, OpenAI error type). The first match wins.
_KB_ERRORS: list[tuple[type[KBError], int, str]] = [
    (KBNotFoundError, 404, "not_found_error"),
    (PassageNotFoundError, 404, "not_found_error"),
    (SourceChangedError, 409, "conflict_error"),
    (EvidenceError, 422, "invalid_request_error"),
    (KBExistsError, 409, "conflict_error"),
    (LockedError, 409, "conflict_error"),
    (EmbedderMismatchError, 409, "conflict_error"),
    (IndexFormatError, 409, "conflict_error"),
    (ParseError, 422, "invalid_request_error"),
    (StorageError, 507, "server_error"),
    (MissingDependencyError, 503, "server_error"),
    (ModelError, 503, "server_error"),
    (ConfigError, 400, "invalid_request_error"),
    (KBError, 400, "invalid_request_error"),
]
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "requests"}

# Messages for the fields whose rule is a pattern (the pattern alone says little to a person).
_FRIENDLY = {"name": f"invalid knowledge base name: use {NAME_RULE}", "query": "the search query is empty",
             "question": "the question is empty"}


def error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KBError)
    async def kb_error(request: Request, exc: KBError) -> JSONResponse:
        if isinstance(exc, UploadRefused):
            return error(exc.status, str(exc), "upload_refused")
        if isinstance(exc, BusyError):
            return error(429, str(exc), "rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after)})
        for cls, status, _ in _KB_ERRORS:
            if isinstance(exc, cls):
                return error(status, str(exc), cls.__name__)
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette lists only the first matching route's methods
            allowed = _allowed_methods(request)
            headers = {"Allow": ", ".join(allowed)}
            return error(405, f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}",
                         headers=headers)
        return error(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            where = bad_json.get("loc", ("body", "?"))[-1]
            why = (bad_json.get("ctx") or {}).get("error", "invalid JSON")
            return error(400, f"malformed JSON in the request body: {why} (at character {where})", "json_invalid")
        parts = []
        for e in errors[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            friendly = _FRIENDLY.get(str(e.get("loc", ("",))[-1])) if e.get("type") == "string_pattern_mismatch" else None
            parts.append(f"{loc}: {friendly or e.get('msg', 'invalid')}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return error(422, "invalid request: " + "; ".join(parts) + more, "validation_error")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method does not
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return sorted(methods)


class UploadLimit:
    """Rejects upload bodies over the limit with 413 while they arrive (Content-Length or counted)."""

    def __init__(self, app: ASGIApp, limit_bytes: int, limit_mb: float) -> None:
        self.app = app
        self.limit = limit_bytes
        self.message = (f"upload too large: the server accepts at most {limit_mb:g} MB per request "
                        "(server.max_upload_mb, KB_SERVER__MAX_UPLOAD_MB)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        upload = scope["path"].endswith("/documents")
        limit = self.limit if upload else JSON_BODY_LIMIT
        message = self.message if upload else f"request body over {JSON_BODY_LIMIT >> 20} MB"
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await error(413, message, "too_large")(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise HTTPException(413, message)
            return msg

        await self.app(scope, counted, send)


def create_app(settings: Settings) -> FastAPI:
    """The kb HTTP API over the knowledge bases of `settings` (one model and one KB cache per app)."""
    state = AnswerService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(title="kb", version="1", lifespan=lifespan,
                  description="Ask your own documents, get cited answers: OpenAI-compatible chat over a knowledge "
                              "base (model 'kb:<name>'), and knowledge-base management.")
    app.state.kb = state
    _install_error_handlers(app)
    # (the multipart framing around a file of the largest size allowed gets 64 KB)
    app.add_middleware(UploadLimit, limit_bytes=upload_limit(settings) + (64 << 10),
                       limit_mb=settings.server.max_upload_mb)

    @app.get("/health", response_model=Health, tags=["health"], summary="Liveness check (no API key needed)")
    def health() -> Health:
        return Health()

    protected = [Depends(require_key)]
    app.include_router(openai_router, dependencies=protected, responses=AUTH_ERRORS)
    app.include_router(kb_router, dependencies=protected, responses=AUTH_ERRORS)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API with uvicorn until Ctrl+C (one process: one model, shared by all requests)."""
    import uvicorn

    from kb.ingest.embed import get_embedder

    # The default embedder is built on first use (~10 s): do it now, not inside the first request.
    get_embedder(settings.embedding, settings.models_dir)
    print(f"kb serve on http://{host}:{port} (API docs at /docs; Ctrl+C stops it)", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
