"""The public Python API: `KnowledgeBase.open(name)`, `.ingest(path)`, `.search(query)`.

Knowledge bases live in a catalog (kb/stores): by default `$KB_HOME/kbs/<name>/`, or a Milvus database
(store.backend: milvus). Writers (ingest, remove, rebuild) hold the catalog's writer lock, so two
processes never write one KB at once; readers need no lock and always see the last commit. A rebuild
writes a fresh KB beside the old one and swaps it in at the end, so the old index stays usable until the
new one is complete.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kb.config import ANSWER_MODES, DEFAULT_EMBEDDER, Settings, load_settings
from kb.errors import ConfigError, EmbedderMismatchError, KBError, KBNotFoundError, ModelError
from kb.lang import language
from kb.loading import Loader, answer_stream
from kb.stores import Catalog, Store, catalog
from kb.stores import manifest as manifests
from kb.types import DocumentInfo, Hit

STAMP_EVERY = 1.0  # seconds between checks that another process rebuilt or deleted the KB

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class KnowledgeBase:
    """A named, persistent collection of documents you can search (and, with a model, ask)."""

    def __init__(self, name: str, place: Catalog, settings: Settings) -> None:
        self.name = name
        self.catalog = place
        self.settings = settings
        location = place.location(name)
        self.folder = Path(location) if settings.store.backend == "local" else None
        self._lock = threading.RLock()  # one store connection, shared by this object's callers
        self._model = Loader(self._load_backend)  # the chat model, loaded on first use (in the background)
        self._open_store()

    def _open_store(self) -> None:
        self.manifest = self.catalog.manifest(self.name)
        self._opened = self.catalog.open(self.name, self.manifest)
        self._opened_stamp = self.catalog.stamp(self.name)
        self._stamped_at = time.monotonic()

    @property
    def _store(self) -> Store:
        """The open store; reopened first when another process rebuilt (swapped) the KB, so a long-running
        server or app never answers from the replaced index."""
        with self._lock:
            if time.monotonic() - self._stamped_at < STAMP_EVERY and self.settings.store.backend != "local":
                return self._opened
            stamp = self.catalog.stamp(self.name)
            self._stamped_at = time.monotonic()
            if stamp is None:
                raise KBNotFoundError(f"knowledge base '{self.name}' is gone ({self.catalog.location(self.name)} "
                                      "was deleted)")
            if stamp != self._opened_stamp:
                self._opened.close()
                self._open_store()
            return self._opened

    def exists(self) -> bool:
        """Whether the KB is still there (another process may have deleted it)."""
        return self.catalog.exists(self.name)

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
            place.create(name, _new_manifest(settings))
        return cls(name, place, settings)

    @classmethod
    def names(cls, settings: Settings | None = None) -> list[str]:
        settings = settings or load_settings()
        return [n for n in catalog(settings).names() if _NAME.match(n)]

    @classmethod
    def delete(cls, name: str, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        catalog(settings).delete(check_name(name))

    def close(self) -> None:
        self._opened.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the embedder ---------------------------------------------------------------------------
    def embedder(self):
        """The embedding model this KB was built with (loaded on first use, shared per process).

        The manifest pins it: a KB built with all-MiniLM-L6-v2 keeps searching with it after kb's default
        changed. Only a model named explicitly in the settings that differs from the KB's is an error."""
        from kb.ingest.embed import get_embedder

        built = self.manifest["embedder"]
        want = self.settings.embedding
        mine = {"model": built["model"], "query_prefix": built.get("query_prefix", ""),
                "passage_prefix": built.get("passage_prefix", "")}
        # Named means set in a config file, a KB_* variable or code, and not to kb's default model or to
        # the model's own prefixes (None): copies of the settings (the app's) carry those without choosing.
        named = {f for f in ("model", "query_prefix", "passage_prefix")
                 if f in want.model_fields_set and getattr(want, f) is not None}
        if want.model == DEFAULT_EMBEDDER:
            named.discard("model")
        if any(getattr(want, f) != mine[f] for f in named):
            raise EmbedderMismatchError(
                f"embedding model '{want.model}' (prefixes {want.query_prefix!r}/{want.passage_prefix!r}) does "
                f"not match the index of KB '{self.name}' (built with '{built['model']}', prefixes "
                f"{mine['query_prefix']!r}/{mine['passage_prefix']!r}); run `kb ingest PATH --kb {self.name} "
                f"--rebuild` to re-embed it with the configured model, or remove embedding.model from your "
                "settings to keep the KB's own"
            )
        try:
            return get_embedder(want.model_copy(update=mine), self.settings.models_dir)
        except ModelError as e:
            if built["model"] == want.model:
                raise
            raise EmbedderMismatchError(
                f"KB '{self.name}' was built with embedding model '{built['model']}', which cannot be loaded "
                f"here ({e}); make that model available, or run `kb ingest PATH --kb {self.name} --rebuild` "
                f"to re-embed the KB with '{want.model}'"
            ) from e

    # -- writing -------------------------------------------------------------------------------
    def ingest(self, *paths: str | Path, prune: bool = False, rebuild: bool = False, wait: float = 0,
               progress: Callable[[Any], None] | None = None):
        """Add or update the documents under the given files/folders. Returns an IngestReport."""
        from kb.ingest.pipeline import run_ingest

        roots = [Path(p).expanduser() for p in paths]
        if not roots:
            raise KBError("nothing to ingest: give at least one file or folder")
        with self._lock, self.catalog.writer(self.name, wait):
            if rebuild:
                return self._rebuild(roots, prune, progress)
            self._check_chunking()
            chunking = self.manifest["chunking"]
            _record_language_prior(self._store, self.embedder)
            return run_ingest(self._store, self.embedder, roots, max_tokens=chunking["max_tokens"],
                              overlap_tokens=chunking["overlap_tokens"], prune=prune, progress=progress,
                              limits=self._limits(), ocr=self._ocr())

    def _check_chunking(self) -> None:
        built = self.manifest["chunking"]
        want = self.settings.chunking.model_dump()
        if built != want:
            raise ConfigError(
                f"chunking settings {want} differ from those KB '{self.name}' was built with {built}; "
                f"run `kb ingest PATH --kb {self.name} --rebuild` to re-chunk everything"
            )

    def _rebuild(self, roots: list[Path], prune: bool, progress):
        from kb.ingest.pipeline import run_ingest

        keep = [Path(d.path) for d in self._store.documents() if Path(d.path).exists()]
        fresh = self.catalog.replacement(self.name, _new_manifest(self.settings))
        try:
            _record_language_prior(fresh.store, self._fresh_embedder)
            report = run_ingest(fresh.store, lambda: self._fresh_embedder(), roots + ([] if prune else keep),
                                max_tokens=self.settings.chunking.max_tokens,
                                overlap_tokens=self.settings.chunking.overlap_tokens, prune=False,
                                progress=progress, limits=self._limits(), ocr=self._ocr())
            fresh.store.finish()
        except BaseException:
            fresh.abort()
            raise
        self._opened.close()
        fresh.commit()
        self._open_store()
        return report

    def _limits(self):
        from kb.ingest.loaders import Limits

        return Limits.from_settings(self.settings.ingest)

    def _ocr(self):
        from kb.ingest.ocr import OcrOptions

        return OcrOptions.from_settings(self.settings.ingest)

    def _fresh_embedder(self):
        from kb.ingest.embed import get_embedder

        return get_embedder(self.settings.embedding, self.settings.models_dir)

    def remove(self, target: str | Path, wait: float = 0) -> list[DocumentInfo]:
        """Remove a document by path or id, or every document under a folder. Returns what was removed."""
        key = str(target)
        resolved = str(Path(key).expanduser().resolve())
        with self._lock, self.catalog.writer(self.name, wait):
            docs = self._store.documents()
            chosen = [d for d in docs if d.doc_id == key or d.path == resolved
                      or d.path.startswith(resolved.rstrip("/") + "/")]
            if not chosen:
                raise KBError(f"'{key}' is not a document in KB '{self.name}' (see `kb list --kb {self.name}`)")
            self._store.remove_documents(d.doc_id for d in chosen)
            self._store.finish()
        return chosen

    # -- reading ---------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, *, mode: str | None = None,
               paths: list[str] | None = None, file_types: list[str] | None = None,
               doc_ids: list[str] | None = None, rerank: bool | None = None,
               also: list[str] | None = None) -> list[Hit]:
        """The k most relevant passages, best first; each Hit has file, page, section and a 0..1 score.

        paths (globs or folders), file_types ('pdf') and doc_ids restrict the search; rerank=False skips
        a configured reranker, rerank=True requires one; `also` holds other wordings of the query (a
        translation) whose rankings are fused with the query's."""
        from kb.search import Filter, search

        if not query or not query.strip():
            raise KBError("the search query is empty")
        settings = self.settings.retrieval
        if mode not in (None, "hybrid", "dense", "bm25"):
            raise KBError(f"unknown retrieval mode '{mode}': use hybrid, dense or bm25")
        if rerank and not settings.reranker:
            raise KBError("rerank asked for, but no reranker is configured: set retrieval.reranker to a "
                          "CrossEncoder name or folder")
        reranker = None
        if settings.reranker and rerank is not False:
            from kb.rerank import get_reranker

            reranker = get_reranker(settings.reranker, self.settings.embedding.device)

        def embed(text: str):
            readable, unknown = self.embedder().readable(text)
            vector = self.embedder().encode([readable if readable.strip() else text], query=True)[0]
            return vector, 1.0 - unknown

        where = Filter(tuple(paths or ()), tuple(file_types or ()), tuple(doc_ids or ()))
        with self._lock:
            return search(self._store, embed, query, settings, k or settings.k, mode, where, reranker,
                          also=tuple(q for q in (also or ()) if q and q.strip()))

    def languages(self) -> dict[str, int]:
        """How many chunks of each language ('en', 'zh') the KB holds."""
        with self._lock:
            return dict(self._store.centering().counts)

    def documents(self) -> list[DocumentInfo]:
        with self._lock:
            return self._store.documents()

    def chunks(self, doc_id: str) -> list[Hit]:
        """A document's chunks in reading order, as Hits with score 0 (what search would return)."""
        with self._lock:
            ids = [int(i) for i in self._store.chunk_ids_of([doc_id])]
            rows = self._store.chunks_by_id(ids)
        if not rows and doc_id not in {d.doc_id for d in self.documents()}:
            raise KBError(f"'{doc_id}' is not a document id in KB '{self.name}' (see `kb list --json --kb {self.name}`)")
        fields = ("chunk_id", "doc_id", "path", "title", "section", "page", "text", "char_start", "char_end")
        return [Hit(**{f: r[f] for f in fields}, score=0.0)
                for r in sorted(rows.values(), key=lambda r: r["ordinal"])]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            docs = self._store.documents()
            return {
                "name": self.name, "path": self.catalog.location(self.name), "documents": len(docs),
                "chunks": self._store.chunk_count(), "bytes_on_disk": self._store.disk_bytes(),
                "embedder": self.manifest["embedder"]["model"], "created_at": self.manifest.get("created_at"),
            }

    # -- answering (the chain lives in kb/chain.py) ---------------------------------------------
    def backend(self):
        """The chat model of settings.llm (loaded on first use, then kept by this object)."""
        return self._model.get()

    def _load_backend(self):
        from kb.llm import load_backend

        return load_backend(self.settings.llm)

    def ask(self, question: str, *, history: list[tuple[str, str]] | None = None, backend=None,
            answer_mode: str | None = None, **search: Any):
        """Answer from the documents: an Answer with text, verified citations, passages, timings.

        `history` is [(question, answer), ...] of earlier turns; `answer_mode` overrides answer.mode
        (generate, extract, auto); `search` takes search()'s filters (paths, file_types, doc_ids, mode, rerank)."""
        from kb.answer import Answer

        answer = None
        for item in self.stream(question, history=history, backend=backend, answer_mode=answer_mode, **search):
            if isinstance(item, Answer):
                answer = item
        return answer

    def stream(self, question: str, *, history: list[tuple[str, str]] | None = None, backend=None,
               answer_mode: str | None = None, **search: Any):
        """Like ask(), streamed: yields the answer's text pieces, then the final Answer.

        Without `backend`, the KB's own model (settings.llm) loads in the background while the embedder
        loads and the question is retrieved."""
        settings = self.settings.answer
        if answer_mode is not None and answer_mode != settings.mode:
            if answer_mode not in ANSWER_MODES:
                raise ConfigError(f"answer mode {answer_mode!r} is not one of {', '.join(ANSWER_MODES)}")
            settings = settings.model_copy(update={"mode": answer_mode})
        return answer_stream(self, self._model, backend, question, history, search, settings)

    def chat(self, session=None):
        """A ChatSession bound to this KB (a new one, or `session` to continue it); `.ask(q)` keeps history."""
        from kb.chat import ChatSession

        session = session or ChatSession()
        session.kb = self
        return session

    def as_retriever(self, k: int | None = None, **search: Any):
        """This KB as a langchain-core BaseRetriever (Documents with path/page/section/score metadata)."""
        from kb.retriever import KBRetriever

        return KBRetriever(kb=self, k=k, search=search)

    def passage_similarity(self, query: str, chunk_ids: list[int]) -> dict[int, float] | None:
        """Cosine similarity of the query to each chunk, or None when the embedder cannot read most of it."""
        embedder = self.embedder()
        readable = getattr(embedder, "readable", None)
        if readable is not None and readable(query)[1] > 0.5:
            return None
        vector = embedder.encode([query], query=True)[0]
        with self._lock:
            vectors = self._store.vectors_of(chunk_ids)
        return {cid: float(vector @ v) for cid, v in vectors.items()}

    def similarity(self, query: str, texts: list[str]) -> np.ndarray:
        """Cosine similarity of the query to each text, in the KB's language-centred space (so a question
        and a sentence in different languages compare by meaning)."""
        embedder = self.embedder()
        with self._lock:
            centering = self._store.centering()
        vectors = centering.vectors(embedder.encode(texts), [language(t) for t in texts])
        return vectors @ centering.query(embedder.encode([query], query=True)[0], language(query))

    def span_text(self, doc_id: str, start: int, end: int) -> str | None:
        """The document's text between two character offsets (None if the document is gone)."""
        with self._lock:
            text = self._store.document_text(doc_id)
        return None if text is None else text[start:end]


def _new_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest of a new KB: the configured embedder (loaded once to learn its size) and chunking."""
    from kb.ingest.embed import get_embedder

    embedder = get_embedder(settings.embedding, settings.models_dir)
    limit = embedder.max_seq_length - 16
    if settings.chunking.max_tokens > limit:
        raise ConfigError(f"chunking.max_tokens={settings.chunking.max_tokens} exceeds what embedding model "
                          f"'{embedder.model_id}' reads ({embedder.max_seq_length} tokens); use at most {limit}")
    return manifests.new(embedder, settings.chunking.model_dump())


def _record_language_prior(store: Store, embedder) -> None:
    """Embed kb's generic reference sentences once per KB (a few seconds) for language centring."""
    if store.language_prior() is None:
        from kb.centering import reference_means

        store.set_language_prior(reference_means(embedder().encode))  # the ingest saves the refitted index
