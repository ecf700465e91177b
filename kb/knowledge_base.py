"""The public Python API: `KnowledgeBase.open(name)`, `.ingest(path)`, `.search(query)`, `.ask(question)`.

A facade: each method hands its work to the module that does it. Where a KB lives, its store, writer lock and
pinned embedder: kb/handle.py. Ingest, rebuild and remove: kb/writing.py. Search and the passage comparisons
the answer chain needs: kb/retrieval/retriever.py (the chain is built with `KnowledgeBase.retriever`). The answer chain:
kb/answer/chain.py, started by kb/answer/loading.py beside the chat model's load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kb import writing
from kb.answer.chat import ChatSession
from kb.answer.loading import Loader, start_answer
from kb.answer.stream import AnswerStream
from kb.answer.types import Answer, Turn
from kb.config import ANSWER_MODES, Settings, load_settings
from kb.errors import ConfigError, KBError, KBNotFoundError
from kb.handle import Handle, check_name, kb_names, new_manifest
from kb.ingest.embed import Embedder
from kb.ingest.report import IngestReport
from kb.llm import ChatBackend, load_backend
from kb.retrieval.retriever import Retriever, SearchOptions
from kb.stores import Catalog, Store, catalog
from kb.stores import manifest as manifests
from kb.types import DocumentInfo, Hit

if TYPE_CHECKING:
    from kb.retrieval.langchain_retriever import KBRetriever

__all__ = ["KnowledgeBase", "check_name"]


class KnowledgeBase:
    """A named, persistent collection of documents you can search (and, with a model, ask)."""

    def __init__(self, name: str, place: Catalog, settings: Settings) -> None:
        self.name = name
        self.catalog = place
        self.settings = settings
        self._handle = Handle(name, place, settings)
        self.folder = Path(self._handle.location) if settings.store.backend == "local" else None
        self.retriever = Retriever(self._handle, settings, self.embedder)  # what the answer chain searches
        self._model = Loader(self._load_backend)  # the chat model, loaded on first use (in the background)

    # -- opening, listing, deleting -----------------------------------------------------------
    @classmethod
    def open(cls, name: str | None = None, *, settings: Settings | None = None, create: bool = True) -> KnowledgeBase:
        """Open the named KB (settings.kb if None); create it if missing and `create` is true."""
        settings = settings or load_settings()
        name = check_name(name or settings.kb)
        place = catalog(settings)
        if not place.exists(name):
            if not create:
                known = ", ".join(place.names()) or "none yet"
                raise KBNotFoundError(f"no knowledge base named '{name}' in {place.where} (existing: {known}); "
                                      f"create it with `kb ingest PATH --kb {name}`")
            place.create(name, new_manifest(settings))
        return cls(name, place, settings)

    @classmethod
    def names(cls, settings: Settings | None = None) -> list[str]:
        return kb_names(catalog(settings or load_settings()))

    @classmethod
    def delete(cls, name: str, settings: Settings | None = None) -> None:
        catalog(settings or load_settings()).delete(check_name(name))

    @property
    def manifest(self) -> dict[str, Any]:
        """What the KB was built with: embedder, chunking, creation time."""
        return self._handle.manifest

    @property
    def _store(self) -> Store:
        return self._handle.store()

    def exists(self) -> bool:
        """Whether the KB is still there (another process may have deleted it)."""
        return self._handle.exists()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embedder(self) -> Embedder:
        """The embedding model this KB was built with (loaded on first use, shared per process)."""
        return self._handle.embedder()

    # -- writing (kb/writing.py) ----------------------------------------------------------------
    def ingest(self, *paths: str | Path, prune: bool = False, rebuild: bool = False, wait: float = 0,
               progress: Callable[[Any], None] | None = None) -> IngestReport:
        """Add or update the documents under the given files/folders; `prune` removes documents whose files are
        gone, `rebuild` re-embeds everything with the configured embedder and chunking, `wait` is how long to
        wait for another writer. Returns an IngestReport."""
        return writing.ingest(self._handle, [Path(p).expanduser() for p in paths], prune=prune, rebuild=rebuild,
                              wait=wait, progress=progress)

    def remove(self, target: str | Path, wait: float = 0) -> list[DocumentInfo]:
        """Remove a document by path or id, or every document under a folder. Returns what was removed."""
        return writing.remove(self._handle, target, wait)

    # -- reading (kb/retrieval/retriever.py) --------------------------------------------------------------
    def search(self, query: str, k: int | None = None, *, mode: str | None = None,
               paths: list[str] | None = None, file_types: list[str] | None = None,
               doc_ids: list[str] | None = None, rerank: bool | None = None,
               also: list[str] | None = None) -> list[Hit]:
        """The k most relevant passages, best first; each Hit has file, page, section and a 0..1 score.

        paths (globs or folders), file_types ('pdf') and doc_ids restrict the search; rerank=False skips
        a configured reranker, rerank=True requires one; `also` holds other wordings of the query (a
        translation) whose rankings are fused with the query's."""
        options = SearchOptions.of(mode, paths, file_types, doc_ids, rerank)
        return self.retriever.search(query, k, options, also or ())

    def languages(self) -> dict[str, int]:
        """How many chunks of each language ('en', 'zh') the KB holds."""
        return self.retriever.languages()

    def documents(self) -> list[DocumentInfo]:
        with self._handle.lock:
            return self._store.documents()

    def document(self, doc_id: str) -> DocumentInfo | None:
        """One document's record, or None when the KB no longer holds it."""
        with self._handle.lock:
            return self._store.document(doc_id)

    def chunks(self, doc_id: str) -> list[Hit]:
        """A document's chunks in reading order, as Hits with score 0 (what search would return)."""
        with self._handle.lock:
            ids = [int(i) for i in self._store.chunk_ids_of([doc_id])]
            rows = self._store.chunks_by_id(ids)
        if not rows and doc_id not in {d.doc_id for d in self.documents()}:
            raise KBError(f"'{doc_id}' is not a document id in KB '{self.name}' (see `kb list --json --kb {self.name}`)")
        fields = ("chunk_id", "doc_id", "path", "title", "section", "page", "text", "char_start", "char_end")
        return [Hit(**{f: r[f] for f in fields}, score=0.0)
                for r in sorted(rows.values(), key=lambda r: r["ordinal"])]

    def page_lines(self, doc_id: str, page: int) -> bytes | None:
        """The OCR lines ingest kept for a document's scanned page (0: a photo), or None (kb/evidence.py)."""
        with self._handle.lock:
            return self._store.page_lines(doc_id, page)

    def around(self, chunk_id: int, neighbours: int = 1) -> tuple[list[Hit], int]:
        """Chunk `chunk_id` with up to `neighbours` chunks on each side in its document, in reading order, and its
        index in that list; ([], -1) when the KB has no such chunk (its document changed or was removed)."""
        with self._handle.lock:
            row = self._store.chunks_by_id([chunk_id]).get(chunk_id)
        if row is None:
            return [], -1
        hits = self.chunks(row["doc_id"])
        index = next((i for i, h in enumerate(hits) if h.chunk_id == chunk_id), None)
        if index is None:  # the document changed in between
            return [], -1
        first = max(0, index - neighbours)
        return hits[first:index + neighbours + 1], index - first

    def stats(self) -> dict[str, Any]:
        with self._handle.lock:
            docs = self._store.documents()
            return {
                "name": self.name, "path": self._handle.location, "documents": len(docs),
                "chunks": self._store.chunk_count(), "bytes_on_disk": self._store.disk_bytes(),
                "embedder": self.manifest["embedder"]["model"], "embedders": manifests.models(self.manifest),
                "created_at": self.manifest.get("created_at"),
            }

    def passage_similarity(self, query: str, chunk_ids: list[int]) -> dict[int, float] | None:
        """Cosine similarity of the query to each chunk, or None when the embedder cannot read most of it."""
        return self.retriever.passage_similarity(query, chunk_ids)

    def span_text(self, doc_id: str, start: int, end: int) -> str | None:
        """The document's text between two character offsets (None if the document is gone)."""
        return self.retriever.span_text(doc_id, start, end)

    # -- answering (kb/answer/chain.py) ----------------------------------------------------------------
    def backend(self) -> ChatBackend:
        """The chat model of settings.llm (loaded on first use, then kept by this object)."""
        return self._model.get()

    def _load_backend(self) -> ChatBackend:
        return load_backend(self.settings.llm)

    def ask(self, question: str, *, history: Sequence[Turn | tuple[str, Answer | str]] | None = None,
            backend: ChatBackend | Loader | None = None, answer_mode: str | None = None, **search: Any) -> Answer:
        """Answer from the documents: an Answer with text, verified citations, passages, timings.

        `history` holds earlier turns, oldest first: Turns, or (question, Answer or answer text) pairs (the model
        sees those that answered from the documents, without their markers: kb.answer.chat.model_history);
        `answer_mode` overrides answer.mode (generate, extract, auto); `search` takes search()'s filters (paths,
        file_types, doc_ids, mode, rerank)."""
        answer = self.stream(question, history=history, backend=backend, answer_mode=answer_mode, **search).answer()
        assert answer is not None  # a stream read to its end has its Answer
        return answer

    def stream(self, question: str, *, history: Sequence[Turn | tuple[str, Answer | str]] | None = None,
               backend: ChatBackend | Loader | None = None, answer_mode: str | None = None,
               sampling: dict[str, Any] | None = None, **search: Any) -> AnswerStream:
        """Like ask(), streamed: an AnswerStream to iterate for the text pieces, then `.answer()` for the Answer.

        Without `backend`, the KB's own model (settings.llm) loads in the background while the embedder loads
        and the question is retrieved (a `Loader` of a model loads the same way). `sampling` holds temperature,
        top_p and max_new_tokens for this answer (max_new_tokens can only shorten it)."""
        settings = self.settings.answer
        if answer_mode is not None and answer_mode != settings.mode:
            if answer_mode not in ANSWER_MODES:
                raise ConfigError(f"answer mode {answer_mode!r} is not one of {', '.join(ANSWER_MODES)}")
            settings = settings.model_copy(update={"mode": answer_mode})
        model = backend if isinstance(backend, Loader) else self._model if backend is None else Loader.of(backend)
        return start_answer(self.retriever, model, question, history or (), SearchOptions.of(**search), settings,
                            sampling)

    def chat(self, session: ChatSession | None = None) -> ChatSession:
        """A ChatSession bound to this KB (a new one, or `session` to continue it); `.ask(q)` keeps history."""
        session = session or ChatSession()
        session.kb = self
        return session

    def as_retriever(self, k: int | None = None, **search: Any) -> KBRetriever:
        """This KB as a langchain-core BaseRetriever (Documents with path/page/section/score metadata)."""
        from kb.retrieval.langchain_retriever import (
            KBRetriever,  # langchain-core: only for callers that want LangChain's interface
        )

        return KBRetriever(kb=self, k=k, search=search)
