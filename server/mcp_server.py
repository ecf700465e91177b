"""`kb mcp`: knowledge bases as MCP tools, so that agents (Claude Desktop, Claude Code, Cursor, in-house ones) can
search and ask them. Built on the official MCP SDK (`mcp` 2.x, `MCPServer`), over stdio or Streamable HTTP.

    list_knowledge_bases()                      name, documents, chunks, languages, embedders
    search(query, kb, k=6, mode)                passages: id, file, page, section, score, text
    ask(question, kb, answer_mode)              the cited answer (streamed as progress messages)
    read_passage(id, neighbours=1, page_image=False)
                                                a passage with the ones around it in its document; page_image adds
                                                its page as a PNG with the passage highlighted (kb/evidence.py)
    ingest(path, kb)                            only with --allow-write; otherwise not listed at all

Every tool answers through the one answer service (kb/answer/service.py), so a search here is `kb search`'s
search and an answer is `kb ask`'s. Each result is structured content (the output schema of the tool) plus a
short text rendering for a model to read. Errors are tool errors that say what to do, never a traceback.
A passage id is '<kb>:<chunk id>'; it holds while the document is unchanged (re-ingesting a changed file gives
its passages new ids). Over HTTP the API-key rule of `kb serve` applies (server/keys.py); back-pressure is the
service's (server.max_queued). This module leaves out the command line (kb/cli/mcp.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from kb.answer.service import AnswerService
from kb.answer.types import Answer
from kb.config import AnswerModeSetting, RetrievalMode, Settings
from kb.errors import (
    EmbedderMismatchError,
    IndexFormatError,
    KBError,
    KBNotFoundError,
    LockedError,
    MissingDependencyError,
    ModelError,
)
from kb.knowledge_base import KnowledgeBase
from kb.types import Hit, format_location

from .keys import WRONG_KEY, key_matches
from .streaming import Pump

log = logging.getLogger("kb.mcp")

INSTRUCTIONS = (
    "Tools over the user's own documents (Chinese and English), indexed by kb on their machine. Use search to find "
    "passages (file, page, section), ask for a cited answer written from them, read_passage for the text around a "
    "passage. Cite passages by their file, page and section. list_knowledge_bases says which knowledge bases "
    "there are."
)
PROGRESS_SECONDS = 0.25  # an answer's text reaches a client that asked for progress at most this often
SNIPPET = 300  # characters of each passage in a search's text rendering (the structured content has it whole)

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


# -- what the tools return ------------------------------------------------------------------------------
class KBSummary(BaseModel):
    name: str
    documents: int
    chunks: int
    languages: dict[str, int] = Field(description="Chunks per language ('en', 'zh').")
    embedders: list[str] = Field(description="The embedding models the KB was indexed with.")


class KBList(BaseModel):
    knowledge_bases: list[KBSummary]


class PassageOut(BaseModel):
    id: str = Field(description="'<kb>:<chunk id>': read_passage gives the passages around it.")
    file: str
    page: int | None = Field(description="1-based page, for documents that have pages.")
    section: str = Field(description="The headings above the passage, 'Chapter > Section'.")
    score: float = Field(description="Relevance 0..1 (search); 0 for a passage read by id.")
    text: str


class SearchOut(BaseModel):
    kb: str
    query: str
    passages: list[PassageOut]


class CitationOut(BaseModel):
    n: int = Field(description="The [n] marker in the answer text.")
    passage_id: str
    file: str
    page: int | None
    section: str
    sentence: str = Field(description="The answer sentence the passage supports.")


class SourceOut(BaseModel):
    n: int = Field(description="The [n] marker in the answer text.")
    id: str = Field(description="The passage id (read_passage gives the passages around it).")
    file: str
    page: int | None
    section: str
    text: str = Field(description="The passage the model was given (neighbouring chunks merged).")


class AskOut(BaseModel):
    kb: str
    question: str
    text: str = Field(description="The answer, with [n] markers pointing at the citations.")
    status: Literal["answered", "refused", "not_found", "general"] = Field(
        description="answered: from the documents; refused: no passage was relevant enough (the model was not "
        "asked); not_found: the model found no answer in the passages; general: general knowledge, no sources.")
    answer_mode: Literal["generate", "extract"] = Field(
        description="generate: written by the chat model; extract: sentences quoted from the passages.")
    citations: list[CitationOut] = Field(description="One per cited answer sentence.")
    sources: list[SourceOut] = Field(description="The passages the citations point at, once each.")
    translation: str | None = Field(description="The question in the other language, also searched (if it was).")


class ReadOut(BaseModel):
    kb: str
    id: str
    passages: list[PassageOut] = Field(description="In reading order; the one asked for is at `index`.")
    index: int


class FileOut(BaseModel):
    path: str
    status: str = Field(description="added, updated, unchanged, failed, removed or unsupported.")
    chunks: int
    reason: str


class IngestOut(BaseModel):
    kb: str
    counts: dict[str, int] = Field(description="Files per status.")
    chunks_added: int
    chunks_removed: int
    seconds: float
    failed: list[FileOut]


# -- errors ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tool_errors(kb: str | None = None) -> Iterator[None]:
    """kb's errors as MCP tool errors that say what to do; anything else too, without its traceback."""
    try:
        yield
    except ToolError:
        raise
    except LockedError as e:
        raise ToolError(f"knowledge base '{kb}' is busy: another process is writing it (an ingest or a rebuild). "
                        f"Try again when it finishes. ({e})") from e
    except (EmbedderMismatchError, IndexFormatError) as e:
        raise ToolError(f"knowledge base '{kb}' cannot be searched until it is rebuilt: {e}") from e
    except ModelError as e:
        raise ToolError(f"no chat model could answer: {e}. A quoted answer needs no model: call ask with "
                        "answer_mode='extract', or search.") from e
    except KBError as e:
        raise ToolError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - a tool error, not a crash the client cannot read
        log.exception("MCP tool failed")
        raise ToolError(f"internal error ({type(e).__name__}: {e}); see the kb mcp log") from e


def _page_image(base: KnowledgeBase, chunk_id: int) -> ImageContent | TextContent:
    """A passage's page as MCP image content (kb.evidence's PNG), or a text note saying why there is none (a format
    without pages, a moved or changed original, a damaged PDF)."""
    from kb import evidence

    try:
        found = evidence.view(base, chunk_id)
    except KBError as e:
        return TextContent(type="text", text=f"No page image: {e}")
    if found.image is None:
        return TextContent(type="text", text="No page image: " + (found.note or f"a {found.kind} document has no pages"))
    return ImageContent(type="image", data=base64.b64encode(Path(found.image).read_bytes()).decode("ascii"),
                        mime_type="image/png")


def _result(data: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=data.model_dump(mode="json"))


def _passage(kb: str, hit: Hit) -> PassageOut:
    return PassageOut(id=f"{kb}:{hit.chunk_id}", file=hit.path, page=hit.page, section=hit.section,
                      score=round(hit.score, 4), text=hit.text)


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:SNIPPET] + ("…" if len(flat) > SNIPPET else "")


def _render_passages(passages: list[PassageOut], scores: bool = True) -> str:
    lines = []
    for i, p in enumerate(passages, 1):
        score = f" (score {p.score:.3f})" if scores else ""
        lines.append(f"[{i}] {format_location(p.file, p.page, p.section)}{score} id={p.id}")
        lines.append(f"    {_snippet(p.text)}")
    return "\n".join(lines)


# -- the server -----------------------------------------------------------------------------------------
class KBTools:
    """The tools over one answer service: every KB of its settings, or only `only`."""

    def __init__(self, service: AnswerService, only: str | None = None) -> None:
        self.service = service
        self.only = only

    def name(self, kb: str | None) -> str:
        """The KB a tool call means: `kb`, or the one this server serves, the only one, or settings.kb."""
        names = self.service.names()
        if self.only:
            if kb and kb != self.only:
                raise ToolError(f"this server serves only knowledge base '{self.only}' (kb mcp --kb {self.only}); "
                                f"leave kb out or pass '{self.only}'")
            kb = self.only
        if not kb:
            if len(names) == 1:
                return names[0]
            if self.service.settings.kb in names:
                return self.service.settings.kb
            raise ToolError(self._which(names))
        if kb not in names:
            raise ToolError(f"no knowledge base named '{kb}'. {self._which(names)}")
        return kb

    @staticmethod
    def _which(names: list[str]) -> str:
        if not names:
            return ("There are no knowledge bases yet: create one with `kb ingest FOLDER --kb NAME` on the server's "
                    "machine (or the ingest tool, when kb mcp runs with --allow-write).")
        return f"Pass kb, one of: {', '.join(names)} (list_knowledge_bases tells what each holds)."

    def open(self, kb: str | None) -> KnowledgeBase:
        name = self.name(kb)
        with tool_errors(name):
            try:
                return self.service.kb(name)
            except KBNotFoundError as e:  # deleted since it was listed
                raise ToolError(f"no knowledge base named '{name}'. {self._which(self.service.names())}") from e

    # -- tools --------------------------------------------------------------------------------------
    def list_knowledge_bases(self) -> Annotated[CallToolResult, KBList]:
        """List the knowledge bases: name, documents, chunks, languages (chunks per language) and embedders."""
        summaries = []
        with tool_errors():
            for name in [self.only] if self.only else self.service.names():
                kb = self.service.kb(name)
                stats = kb.stats()
                summaries.append(KBSummary(name=name, documents=stats["documents"], chunks=stats["chunks"],
                                           languages=kb.languages(), embedders=list(stats["embedders"])))
        if not summaries:
            text = KBTools._which([])
        else:
            text = "\n".join(f"{s.name}: {s.documents} documents, {s.chunks} chunks ("
                             + ", ".join(f"{lang} {n}" for lang, n in s.languages.items()) + ")" for s in summaries)
        return _result(KBList(knowledge_bases=summaries), text)

    def search(
        self,
        query: Annotated[str, Field(min_length=1, description="What to look for, in Chinese or English.")],
        kb: Annotated[str | None, Field(description="Knowledge base (default: the only one, or the configured "
                                        "default; list_knowledge_bases names them).")] = None,
        k: Annotated[int, Field(ge=1, le=50, description="Number of passages.")] = 6,
        mode: Annotated[RetrievalMode | None, Field(
            description="Retrieval: hybrid (meaning + keywords, the default), dense (meaning) or bm25 "
            "(keywords).")] = None,
    ) -> Annotated[CallToolResult, SearchOut]:
        """Find the passages of the user's documents that best match a query, best first, with file, page, section
        and score. Returns passages, not whole documents; read_passage gives the text around one."""
        base = self.open(kb)
        if not query.strip():
            raise ToolError("the query is empty: say what to look for")
        with tool_errors(base.name):
            hits = base.search(query, k, mode=mode)
        passages = [_passage(base.name, h) for h in hits]
        text = (f"{len(passages)} passages from '{base.name}':\n" + _render_passages(passages) if passages
                else f"No passage of '{base.name}' matched.")
        return _result(SearchOut(kb=base.name, query=query, passages=passages), text)

    async def ask(
        self,
        question: Annotated[str, Field(min_length=1, description="The question, in Chinese or English.")],
        ctx: Context,
        kb: Annotated[str | None, Field(description="Knowledge base (default: the only one, or the configured "
                                        "default).")] = None,
        answer_mode: Annotated[AnswerModeSetting | None, Field(
            description="generate: the chat model writes the answer; extract: sentences quoted from the "
            "passages, no model (fast); auto: generate when the chat model writes the question's language well, "
            "else extract. Default: the server's answer.mode.")] = None,
    ) -> Annotated[CallToolResult, AskOut]:
        """Answer a question from the user's documents, in the question's language, with [n] citations checked
        against the passages (file, page, section). Refuses rather than guesses when nothing relevant is found.
        The text streams as progress messages to a client that asked for progress."""
        base = await anyio.to_thread.run_sync(self.open, kb)
        if not question.strip():
            raise ToolError("the question is empty")
        with tool_errors(base.name):
            try:
                answer = await self._answer(base, question, answer_mode, ctx)
            except MissingDependencyError as e:  # the chat model's packages (the search's are there)
                raise ModelError(str(e)) from e
        return _result(ask_out(base.name, answer), render_answer(base.name, answer))

    async def _answer(self, base: KnowledgeBase, question: str, answer_mode: str | None, ctx: Context) -> Answer:
        pump = Pump(lambda: self.service.answer(base, question, answer_mode=answer_mode))
        written, unsent, last = 0, [], time.monotonic()
        async for piece in pump.pieces():  # cancelling this call stops the model (Pump.pieces' finally)
            written += len(piece)
            unsent.append(piece)
            if time.monotonic() - last >= PROGRESS_SECONDS:
                await ctx.report_progress(written, None, "".join(unsent))
                unsent, last = [], time.monotonic()
        if unsent:
            await ctx.report_progress(written, None, "".join(unsent))
        answer = pump.answer
        if answer is None:
            raise ToolError("the answer was stopped before it was complete")
        return answer

    def read_passage(
        self,
        id: Annotated[str, Field(description="A passage id from search or ask, '<kb>:<number>'.")],
        neighbours: Annotated[int, Field(ge=0, le=10, description="Passages to add on each side, from the same "
                                         "document.")] = 1,
        page_image: Annotated[bool, Field(description="Also return the passage's page as a PNG image with the "
                                          "passage highlighted (PDFs, scans and photos; a note for other "
                                          "formats).")] = False,
    ) -> Annotated[CallToolResult, ReadOut]:
        """Read a passage with its neighbours in its document, for more context than a search passage gives."""
        name, _, number = id.rpartition(":")
        if not name or not number.isdigit():
            raise ToolError(f"'{id}' is not a passage id: ids look like 'samples:42' (from search or ask)")
        base = self.open(name)
        with tool_errors(name):
            hits, index = base.around(int(number), neighbours)
        if not hits:
            raise ToolError(f"knowledge base '{name}' has no passage {number}: its document changed or was removed "
                            "since the search. Search again for fresh ids.")
        passages = [_passage(name, h) for h in hits]
        text = "\n\n".join(("» " if i == index else "") + f"{format_location(p.file, p.page, p.section)} id={p.id}\n"
                           + p.text for i, p in enumerate(passages))
        result = _result(ReadOut(kb=name, id=id, passages=passages, index=index), text)
        if page_image:
            result.content.append(_page_image(base, int(number)))
        return result

    async def ingest(
        self,
        path: Annotated[str, Field(description="A file or folder on the server's machine (absolute, or relative to "
                                   "the folder kb mcp started in).")],
        ctx: Context,
        kb: Annotated[str | None, Field(description="Knowledge base to add to; created if there is none of that "
                                        "name (default: the only one, or the configured default).")] = None,
    ) -> Annotated[CallToolResult, IngestOut]:
        """Add or update the documents under a file or folder of the server's machine (only what changed is
        re-read). Never removes documents."""
        names = await anyio.to_thread.run_sync(self.service.names)
        name = kb if kb and kb not in names and not self.only else self.name(kb)
        target = Path(path).expanduser()
        if not target.exists():
            raise ToolError(f"no file or folder '{path}' on the machine kb mcp runs on (it started in {Path.cwd()}); "
                            "pass an absolute path")
        with tool_errors(name):
            report = await anyio.to_thread.run_sync(self._ingest, name, target, ctx)
        failed = [FileOut(path=f.path, status=f.status, chunks=f.chunks, reason=f.reason) for f in report.failed]
        counts: dict[str, int] = {}
        for f in report.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        out = IngestOut(kb=name, counts=counts, chunks_added=report.chunks_added, chunks_removed=report.chunks_removed,
                        seconds=round(report.seconds, 2), failed=failed)
        text = (f"'{name}': " + ", ".join(f"{n} {status}" for status, n in counts.items()) + f"; {report.chunks_added} "
                f"chunks added in {report.seconds:.1f} s" + "".join(f"\nfailed: {f.path}: {f.reason}" for f in failed))
        return _result(out, text)

    def _ingest(self, name: str, target: Path, ctx: Context):
        done = [0, 0]  # files done, files in all

        def progress(event: Any) -> None:
            if event.kind == "start":
                done[1] = event.total
            elif event.kind == "file" and event.result is not None:
                done[0] += 1
                with contextlib.suppress(Exception):  # a client that left does not stop the ingest
                    anyio.from_thread.run(ctx.report_progress, done[0], done[1] or None,
                                          f"{event.result.status}: {event.result.path}")

        with KnowledgeBase.open(name, settings=self.service.settings, create=True) as writer:
            return writer.ingest(target, progress=progress)


def _passage_ids(kb: str, answer: Answer) -> dict[int, str]:
    """The passage id of each [n] of the answer (a merged passage: its first chunk)."""
    return {p.n: f"{kb}:{p.chunk_ids[0]}" for p in answer.passages if p.chunk_ids}


def ask_out(kb: str, answer: Answer) -> AskOut:
    ids = _passage_ids(kb, answer)
    citations = [CitationOut(n=c.n, passage_id=ids.get(c.n, ""), file=c.path, page=c.page, section=c.section,
                             sentence=c.sentence) for c in answer.citations]
    sources = [SourceOut(n=p.n, id=ids.get(p.n, ""), file=p.path, page=p.page, section=p.section, text=p.text)
               for p in answer.cited_passages]
    return AskOut(kb=kb, question=answer.question, text=answer.text, status=answer.status,
                  answer_mode=answer.answer_mode, citations=citations, sources=sources, translation=answer.translation)


def render_answer(kb: str, answer: Answer) -> str:
    """The answer and the passages its markers point at, for a model to read."""
    ids = _passage_ids(kb, answer)
    sources = {c.n: format_location(c.path, c.page, c.section) for c in answer.citations}
    lines = [answer.text.strip()]
    if sources:
        lines.append("\nSources:")
        lines += [f"[{n}] {where} id={ids.get(n, '')}" for n, where in sorted(sources.items())]
    if answer.refused:
        lines.append(f"\n(status {answer.status}: the documents of '{kb}' hold no answer; search with other words)")
    return "\n".join(lines)


def build(service: AnswerService, *, only: str | None = None, allow_write: bool = False) -> MCPServer:
    """The MCP server over `service`'s knowledge bases (all, or `only`); the ingest tool only with `allow_write`."""
    from importlib.metadata import version

    tools = KBTools(service, only)
    server = MCPServer("kb", title="kb: your documents", version=version("kb"), instructions=INSTRUCTIONS,
                       log_level="WARNING")
    server.add_tool(tools.list_knowledge_bases, "list_knowledge_bases", "List knowledge bases", annotations=READ_ONLY)
    server.add_tool(tools.search, "search", "Search documents", annotations=READ_ONLY)
    server.add_tool(tools.ask, "ask", "Ask documents (cited answer)",
                    annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False,
                                                open_world_hint=False))
    server.add_tool(tools.read_passage, "read_passage", "Read a passage in context", annotations=READ_ONLY)
    if allow_write:
        server.add_tool(tools.ingest, "ingest", "Add documents to a knowledge base",
                        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                    idempotent_hint=True, open_world_hint=False))
    return server


class RequireKey:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <server.api_key>` (when one is set)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.key:
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            if not key_matches(header, self.key):
                from starlette.responses import JSONResponse

                body = {"error": {"message": WRONG_KEY, "type": "authentication_error", "code": None}}
                response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def http_app(service: AnswerService, host: str, *, only: str | None = None, allow_write: bool = False):
    """The Streamable HTTP app (endpoint /mcp) with the API-key rule of `kb serve`."""
    server = build(service, only=only, allow_write=allow_write)
    return RequireKey(server.streamable_http_app(host=host), service.settings.server.api_key)


def warm(settings: Settings) -> threading.Thread:
    """Build the embedder in the background, so that the first search does not wait ~10 s for it."""
    from kb.ingest.embed import get_embedder

    def run() -> None:
        with contextlib.suppress(Exception):  # a broken embedder is reported by the first search
            get_embedder(settings.embedding, settings.models_dir)

    thread = threading.Thread(target=run, name="kb-warm-embedder", daemon=True)
    thread.start()
    return thread


def run_stdio(settings: Settings, *, only: str | None = None, allow_write: bool = False) -> None:
    """Serve over stdin/stdout until the client closes them. The SDK moves file descriptor 1 to stderr while it
    serves, so that what a library prints cannot corrupt the protocol."""
    service = AnswerService(settings)
    warm(settings)
    try:
        build(service, only=only, allow_write=allow_write).run("stdio")
    finally:
        service.close()


def run_http(settings: Settings, host: str, port: int, *, only: str | None = None, allow_write: bool = False) -> None:
    import uvicorn

    service = AnswerService(settings)
    warm(settings)
    app = http_app(service, host, only=only, allow_write=allow_write)
    shown = f"[{host}]" if ":" in host else host
    print(f"kb mcp on http://{shown}:{port}/mcp (Streamable HTTP; Ctrl+C stops it)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.close()
