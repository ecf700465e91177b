"""What the routes and the app share: the answer service (kb/answer/service.py) as a dependency, the API-key check (its rule: keys.py), and the error
responses a route declares (so the OpenAPI schema lists them). A leaf: it imports no route and no app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kb.answer.service import AnswerService

from .keys import WRONG_KEY, key_matches
from .schemas import ErrorResponse

_bearer = HTTPBearer(auto_error=False, description="server.api_key (KB_SERVER__API_KEY), when it is set.")

# Declared on every route that can fail, so the OpenAPI schema lists each error the route returns.
ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 422)}
MODEL_ERRORS = {503: {"model": ErrorResponse, "description": "The chat model could not be loaded or run."}}
BUSY_ERRORS = {429: {
    "model": ErrorResponse,
    "description": "server.max_queued answers are running or waiting for the model: try again later (error "
                   "code rate_limit_exceeded). A stream is refused before it starts; one that started is never cut.",
    "headers": {"Retry-After": {"description": "Seconds to wait, estimated from the measured answer times.",
                                "schema": {"type": "integer", "minimum": 1}}},
}}
AUTH_ERRORS = {401: {"model": ErrorResponse, "description": "Missing or wrong API key."}}


def get_service(request: Request) -> AnswerService:
    return request.app.state.kb


ServiceDep = Annotated[AnswerService, Depends(get_service)]


def require_key(request: Request,
                creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    """Dependency of every protected route: the Bearer token must equal server.api_key, if one is set."""
    key = get_service(request).settings.server.api_key
    if not key_matches(f"Bearer {creds.credentials}" if creds else None, key):
        raise HTTPException(401, WRONG_KEY, headers={"WWW-Authenticate": "Bearer"})
