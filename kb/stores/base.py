"""What kb needs from a store, written down once: the `Store` and `Catalog` protocols.

A *store* is one knowledge base's documents, chunks, vectors and keyword index; a *catalog* is the
place that holds named KBs (their manifests, creation, deletion, the writers' lock, rebuilds). Search
fusion (kb/retrieval/hybrid.py), the ingest pipeline, the chain, the CLI, the app and the HTTP API talk to these
protocols only. Two implementations exist:

- kb/stores/local/: SQLite (the truth) + a FAISS file (a cache), one folder per KB under $KB_HOME/kbs;
- kb/stores/milvus/: Milvus (Milvus Lite in process, or a server/cluster) for several machines.

Rules every store keeps:
- `put_documents` commits each document on its own: a reader sees a document's old version or its new
  one, never a mixture, and a process killed at any moment leaves every finished document in place. The
  next writer cleans up whatever a killed one left half-written.
- Chunk ids are kb's own (deterministic from document id, ordinal and text), unique within a KB.
- Vectors go in raw (as the embedder gave them, unit length); `dense_query` compares in the KB's
  language-centred space (kb/stores/centring.py); `vectors_of` and `export` give the raw vectors back.
- A KB built with an ensemble of embedders (manifest "ensemble") keeps one dense index per embedder; the
  others' vectors (Record.ensemble) cover only the chunks each can read, and `dense_query(model=...)` searches
  one of them. `vectors_of` and `centering` are the main embedder's.
- Keyword terms are computed by kb (kb.text.keywords.index_text) and stored verbatim, so both stores agree on
  what a term is (jieba for Chinese, whole words for the rest).

The helpers at the end (filtering documents, batching ids, the language prior's JSON) are the logic both
stores share.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, Protocol, TypeVar

import numpy as np

from kb.stores.centring import Centering
from kb.types import Chunk, DocumentInfo, DocumentState

# A dense search prepared on the caller's thread and safe to run on another:
# (query vector, limit, question language) -> [(chunk_id, cosine in the centred space)], best first.
DenseQuery = Callable[[np.ndarray, int, str], list[tuple[int, float]]]

# A keyword search prepared on the caller's thread and safe to run on another: (query, limit) -> [(chunk_id, bm25)].
KeywordQuery = Callable[[str, int], list[tuple[int, float]]]

T = TypeVar("T")

CHUNK_FIELDS = ("chunk_id", "doc_id", "path", "title", "section", "page", "text", "char_start", "char_end", "ordinal")


@dataclass(frozen=True)
class SideVectors:
    """One other embedder's vectors of a document (an ensemble member, kb/stores/manifest.py): it embeds only the
    chunks it can read, so each vector names its chunk by position in Record.chunks."""

    rows: tuple[int, ...]
    vectors: np.ndarray  # float32 [len(rows), its dim], unit length

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.vectors):
            raise ValueError("side vectors and their rows must line up")


@dataclass(frozen=True)
class Record:
    """One document as a store writes it: its row, full text, chunks, their raw vectors and keyword terms, the
    other embedders' vectors (model name -> SideVectors), and the OCR lines of its scanned pages or photo (page,
    0 for a photo -> kb.ingest.ocr_layout.pack_lines), kept for showing a passage on its page."""

    info: DocumentInfo
    text: str
    chunks: list[Chunk]
    vectors: np.ndarray  # float32 [len(chunks), dim], unit length
    terms: list[str]  # kb.text.keywords.index_text of each chunk's embedding text
    ensemble: dict[str, SideVectors] = field(default_factory=dict)
    page_lines: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.chunks) != len(self.vectors) or len(self.chunks) != len(self.terms):
            raise ValueError("chunks, vectors and keyword terms must line up")
        if any(r < 0 or r >= len(self.chunks) for side in self.ensemble.values() for r in side.rows):
            raise ValueError("side vectors name chunks the record does not hold")


class Store(Protocol):
    """One knowledge base. Writers hold the catalog's writer lock; readers need none."""

    where: str  # for messages: a folder, or "collection X at milvus URI"

    def close(self) -> None: ...

    # documents
    def document_states(self) -> dict[str, DocumentState]:
        """path -> the stored version's hash, size, mtime and doc_id, for deciding what changed."""
    def documents(self) -> list[DocumentInfo]: ...
    def document(self, doc_id: str) -> DocumentInfo | None: ...
    def document_text(self, doc_id: str) -> str | None: ...
    def page_lines(self, doc_id: str, page: int) -> bytes | None:
        """The OCR lines ingest kept for a scanned page (0: a photo), or None (none kept: a KB or store without)."""
    def put_documents(self, records: list[Record]) -> int:
        """Replace each document and all its chunks, one commit per document. Returns chunks removed."""
    def touch_document(self, path: str, mtime: float) -> None: ...
    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and their chunks. Returns chunks removed."""

    # chunks
    def chunk_count(self) -> int: ...
    def chunks_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """CHUNK_FIELDS of each chunk, keyed by chunk id (missing ids left out)."""
    def chunk_ids_of(self, doc_ids: list[str]) -> np.ndarray: ...
    def neighbours(self, doc_id: str, first: int, last: int) -> list[tuple[int, str, int, int, str]]:
        """(ordinal, section, char_start, char_end, text) of a document's chunks in an ordinal range."""
    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Raw vectors by chunk id."""
    def matching_documents(self, paths: list[str] | None, file_types: list[str] | None,
                           doc_ids: list[str] | None) -> list[str]: ...

    # the two rankings
    def keyword_search(self, query: str, limit: int, doc_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """(chunk_id, bm25 >= 0) best first, optionally only in some documents."""
    def keyword_query(self, doc_ids: list[str] | None = None) -> KeywordQuery:
        """keyword_search, prepared here and safe to run on another thread (beside this thread's own searches)."""
    def term_document_frequency(self, terms: list[str]) -> dict[str, int]:
        """How many chunks hold each keyword term ({}: the store cannot tell; quoting then counts over the passages
        at hand)."""
    def dense_query(self, doc_ids: list[str] | None = None, model: str | None = None) -> DenseQuery:
        """The dense search of the main embedder, or of `model`, another embedder of the KB's ensemble."""
    def centering(self) -> Centering: ...

    # the embedder's language prior (kb.stores.centring.reference_means), recorded once per KB
    def language_prior(self) -> dict[str, np.ndarray] | None: ...
    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None: ...

    def preset_centering(self, centering: Centering) -> None:
        """A hint before the first write: the centring the finished store will have (a migration knows it)."""

    # the start and the end of a write session: derived indexes brought up to date
    def catch_up(self, progress: Callable[[str, int, int], None] | None = None) -> None:
        """Before the session's writes: an index that is behind meta data (a KB made by an older kb or another
        engine) is brought up to date, telling `progress` (what: 'keywords' or 'vectors', chunks done, chunks in
        all) when that takes a while."""
    def finished(self) -> bool: ...
    def finish(self) -> None: ...

    def disk_bytes(self) -> int | None: ...
    def export(self) -> Iterator[Record]:
        """Every document with its chunks, raw vectors and terms (for `kb migrate`)."""


class Catalog(Protocol):
    """Where named KBs live: $KB_HOME/kbs (local) or a Milvus database."""

    where: str

    def names(self) -> list[str]: ...
    def exists(self, name: str) -> bool: ...
    def manifest(self, name: str) -> dict[str, Any]:
        """The KB's checked manifest; KBNotFoundError when there is none."""
    def create(self, name: str, manifest: dict[str, Any]) -> None: ...
    def open(self, name: str, manifest: dict[str, Any]) -> Store: ...
    def delete(self, name: str) -> None: ...
    def writer(self, name: str, wait: float) -> AbstractContextManager[None]:
        """The KB's writer lock (LockedError naming the holder when taken)."""
    def stamp(self, name: str) -> Any:
        """A value that changes when the KB is rebuilt or deleted elsewhere (None: gone)."""
    def replacement(self, name: str, manifest: dict[str, Any]) -> Replacement:
        """A fresh, empty store that takes the KB's place on commit (rebuild, migrate)."""
    def location(self, name: str) -> str: ...
    def close(self) -> None: ...


class Replacement(Protocol):
    store: Store

    def commit(self) -> None:
        """Make the new store the KB, atomically, and drop the old one."""
    def abort(self) -> None: ...


def filter_documents(rows: Iterable[tuple[str, str, str]], paths: list[str] | None, file_types: list[str] | None,
                     doc_ids: list[str] | None) -> list[str]:
    """Ids of the (doc_id, path, file_type) rows that pass a filter: path globs (fnmatch, or a folder), file
    types, document ids."""
    types = {t.lower().lstrip(".") for t in file_types or []}
    wanted = None if doc_ids is None else set(doc_ids)
    out = []
    for doc_id, path, file_type in rows:
        if wanted is not None and doc_id not in wanted:
            continue
        if types and file_type not in types:
            continue
        if paths and not any(fnmatch(path, g) or fnmatch(path, f"*/{g}") or path.startswith(g.rstrip("/") + "/")
                             for g in paths):
            continue
        out.append(doc_id)
    return out


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size` (SQLite's and Milvus's limits on a statement's values)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def prior_to_json(prior: dict[str, np.ndarray]) -> str:
    """The embedder's language prior (kb.stores.centring.reference_means) as both stores record it: JSON, 7 decimals."""
    return json.dumps({k: [round(float(x), 7) for x in v] for k, v in prior.items()})


def prior_from_json(text: str) -> dict[str, np.ndarray]:
    """The language prior back from prior_to_json's text (ValueError, TypeError or AttributeError when damaged)."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(text).items()}
