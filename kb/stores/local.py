"""The local store: a knowledge base in one folder, SQLite for documents, chunks, vectors and the keyword
index, FAISS for dense search. The default; kb/stores/base.py says what every store provides.

Layout of one KB folder:
    manifest.json         format version, embedder and chunking settings (written once, at creation)
    meta.sqlite           the truth: documents, chunks (+ vectors as float32 blobs), FTS5 keyword index
    vectors-<gen>.faiss   the dense index for commit generation <gen>, a cache of the vectors in SQLite

Every change is one SQLite transaction (WAL mode), which is the commit point: a process killed at any
moment leaves the last committed state. The FAISS file is derived data tagged with the generation it
was built from; if it is missing or stale (a crash between the SQLite commit and the file write) it is
rebuilt from SQLite. FAISS reads only a file whose digest kb recorded in SQLite when it wrote it: a
damaged or foreign file is rebuilt from SQLite, never parsed. Nothing is ever unpickled: FAISS has its
own binary format, the rest is SQL/JSON.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from kb import dense
from kb.centering import Centering
from kb.centering import fit as fit_centering
from kb.errors import IndexFormatError, KBNotFoundError, LockedError, StorageError
from kb.keywords import fts_query
from kb.lang import language
from kb.stores import manifest as manifests
from kb.stores.base import CHUNK_FIELDS, DenseQuery, Record, filter_documents
from kb.types import Chunk, DocumentInfo

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, title TEXT NOT NULL, file_type TEXT NOT NULL,
    content_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, ingested_at REAL NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    section TEXT NOT NULL, page INTEGER, char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
    vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(terms, tokenize='porter unicode61 remove_diacritics 2');
"""
_COLUMNS = {
    "documents": ["doc_id", "path", "title", "file_type", "content_hash", "size", "mtime", "ingested_at", "text"],
    "chunks": ["chunk_id", "doc_id", "ordinal", "text", "section", "page", "char_start", "char_end", "vector"],
}
_FAISS_DIGEST = "faiss_file"  # meta key: "<generation>:<blake2b of the FAISS file kb wrote>"
_PRIOR = "language_prior"  # meta key: JSON of the embedder's per-language means over generic text
_CENTERING = "centering"  # meta key: "<generation>:<JSON of the per-language means the FAISS file holds>"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class LocalStore:
    """One KB folder. Writers must hold the KB's lock (LocalCatalog.writer); readers need none."""

    def __init__(self, folder: Path, dim: int, hnsw_threshold: int = 200_000) -> None:
        self.folder = folder
        self.where = str(folder)
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.db_path = folder / "meta.sqlite"
        self._db = self._connect()
        self._index = None  # (generation, DenseIndex)

    # -- connection and schema ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            elif version[0] != str(SCHEMA_VERSION):
                raise IndexFormatError(
                    f"{self.db_path} has schema version {version[0]}; this kb reads {SCHEMA_VERSION}. "
                    "Rebuild the KB with `kb ingest --rebuild`."
                )
            for table, columns in _COLUMNS.items():
                have = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                if have != columns:
                    raise IndexFormatError(f"{self.db_path} is not a kb database: table '{table}' has columns "
                                           f"{have}, kb expects {columns}. Rebuild the KB with `kb ingest --rebuild`.")
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(f"{self.db_path} is not a usable kb database ({e})") from e
        return db

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, and bump the generation; rolled back on any error."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite has already rolled back after a full disk
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if "full" not in str(e) and "I/O" not in str(e) and "readonly" not in str(e):
                raise
            raise StorageError(f"cannot write {self.db_path} ({e}); free disk space (or fix the folder's "
                               "permissions) and run the command again: the KB keeps its last commit") from e

    @property
    def generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    # -- documents ---------------------------------------------------------------------------
    def document_states(self) -> dict[str, tuple[str, int, float, str]]:
        """path -> (content_hash, size, mtime, doc_id), for deciding what changed."""
        rows = self._db.execute("SELECT path, content_hash, size, mtime, doc_id FROM documents")
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def documents(self) -> list[DocumentInfo]:
        rows = self._db.execute(
            "SELECT d.doc_id, d.path, d.title, d.content_hash, d.size, d.mtime, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id), d.ingested_at, d.file_type "
            "FROM documents d ORDER BY d.path"
        )
        return [DocumentInfo(*r) for r in rows]

    def document_text(self, doc_id: str) -> str | None:
        row = self._db.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def put_documents(self, records: list[Record]) -> int:
        """Replace each document and all its chunks, one transaction per document. Returns chunks removed."""
        return sum(self._put(r.info, r.text, r.chunks, r.vectors, r.terms) for r in records)

    def _put(self, info: DocumentInfo, text: str, chunks: list[Chunk], vectors: np.ndarray, terms: list[str]) -> int:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as db:
            removed = self._delete_doc(db, info.doc_id, info.path)
            db.execute(
                "INSERT INTO documents VALUES (?,?,?,?,?,?,?,?,?)",
                (info.doc_id, info.path, info.title, info.file_type, info.content_hash, info.size,
                 info.mtime, info.ingested_at, text),
            )
            db.executemany(
                "INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?)",
                [(c.chunk_id, c.doc_id, c.ordinal, c.text, c.section, c.page, c.char_start, c.char_end,
                  v.tobytes()) for c, v in zip(chunks, vectors)],
            )
            db.executemany(
                "INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)",
                [(c.chunk_id, t) for c, t in zip(chunks, terms)],
            )
        return removed

    def touch_document(self, path: str, mtime: float) -> None:
        """Record a new mtime for a file whose content did not change."""
        with self.transaction() as db:
            db.execute("UPDATE documents SET mtime=? WHERE path=?", (mtime, path))

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and their chunks in one transaction. Returns chunks removed."""
        removed = 0
        with self.transaction() as db:
            for doc_id in doc_ids:
                removed += self._delete_doc(db, doc_id, None)
        return removed

    @staticmethod
    def _delete_doc(db: sqlite3.Connection, doc_id: str, path: str | None) -> int:
        ids = [r[0] for r in db.execute("SELECT chunk_id FROM chunks WHERE doc_id=?", (doc_id,))]
        db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in ids])
        db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
        if path is not None:  # a path re-used under another id (should not happen, but never duplicate)
            db.execute("DELETE FROM documents WHERE path=?", (path,))
        return len(ids)

    # -- chunks ------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def chunks_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """Chunk rows joined with their document, keyed by chunk id (missing ids are left out)."""
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                "SELECT c.chunk_id, c.doc_id, d.path, d.title, c.section, c.page, c.text, c.char_start, "
                f"c.char_end, c.ordinal FROM chunks c JOIN documents d USING (doc_id) WHERE c.chunk_id IN ({marks})",
                part,
            )
            for r in rows:
                out[r[0]] = dict(zip(CHUNK_FIELDS, r))
        return out

    def keyword_search(self, query: str, limit: int, doc_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """(chunk_id, bm25) best first, optionally only in some documents. FTS5's bm25() is negative."""
        match = fts_query(query)
        if match is None or doc_ids == []:
            return []
        sql = "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ?"
        params: list[Any] = [match]
        if doc_ids is not None:
            sql += f" AND rowid IN (SELECT chunk_id FROM chunks WHERE doc_id IN ({','.join('?' * len(doc_ids))}))"
            params.extend(doc_ids)
        rows = self._db.execute(sql + " ORDER BY s LIMIT ?", (*params, limit))
        return [(r[0], -r[1]) for r in rows]

    def matching_documents(self, paths: list[str] | None, file_types: list[str] | None,
                           doc_ids: list[str] | None) -> list[str]:
        """Ids of the documents that pass a filter: path globs (fnmatch), file types, document ids."""
        rows = self._db.execute("SELECT doc_id, path, file_type FROM documents")
        return filter_documents(rows, paths, file_types, doc_ids)

    def chunk_ids_of(self, doc_ids: list[str]) -> np.ndarray:
        ids: list[int] = []
        for start in range(0, len(doc_ids), 500):
            part = doc_ids[start:start + 500]
            ids.extend(r[0] for r in self._db.execute(
                f"SELECT chunk_id FROM chunks WHERE doc_id IN ({','.join('?' * len(part))})", part))
        return np.asarray(ids, dtype=np.int64)

    def neighbours(self, doc_id: str, first: int, last: int) -> list[tuple[int, str, int, int, str]]:
        """(ordinal, section, char_start, char_end, text) of a document's chunks in an ordinal range."""
        return self._db.execute(
            "SELECT ordinal, section, char_start, char_end, text FROM chunks WHERE doc_id=? AND ordinal BETWEEN ? AND ? "
            "ORDER BY ordinal", (doc_id, first, last)).fetchall()

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for cid, blob in self._db.execute(
                    f"SELECT chunk_id, vector FROM chunks WHERE chunk_id IN ({','.join('?' * len(part))})", part):
                out[cid] = np.frombuffer(blob, dtype=np.float32)
        return out

    # -- the dense index (FAISS work itself is in kb/dense.py) ---------------------------------
    def dense_index(self) -> dense.DenseIndex:
        """The dense index for the current generation: cached, else read from file, else rebuilt."""
        self._db.execute("BEGIN")  # one read snapshot for the generation and, if needed, the vectors
        try:
            gen = self.generation
            if self._index is not None and self._index[0] == gen:
                return self._index[1]
            path = self.folder / f"vectors-{gen}.faiss"
            data = self._trusted_faiss_bytes(path, gen)
            centering = self._recorded_centering(gen)
            index = None if data is None or centering is None else dense.read_index(data, path)
            if index is not None and (index.ntotal != self.chunk_count() or index.d != self.dim):
                index = None  # stale or foreign: rebuild rather than answer from wrong vectors
            if index is None:
                index, centering = self._build_dense_index()
        finally:
            self._db.execute("COMMIT")
        built = dense.DenseIndex(index, centering)
        self._index = (gen, built)
        return built

    def _build_dense_index(self):
        """A FAISS index of the centred vectors in SQLite, and the centring (per-language means) it used."""
        langs: list[str] = []

        def rows():  # streamed: only the vectors and each chunk's language are kept
            for chunk_id, blob, text in self._db.execute("SELECT chunk_id, vector, text FROM chunks"):
                langs.append(language(text))
                yield chunk_id, blob

        ids, vectors = dense.vectors_from_rows(rows(), self.dim, self.db_path, self.chunk_count())
        centering = fit_centering(vectors, langs, self.language_prior())
        hnsw = len(ids) > self.hnsw_threshold
        return dense.build_index(ids, centering.vectors(vectors, langs), hnsw), centering

    def language_prior(self) -> dict[str, np.ndarray] | None:
        """The embedder's per-language mean vectors over generic text, if recorded (kb.centering)."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (_PRIOR,)).fetchone()
        if row is None:
            return None
        try:
            return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(row[0]).items()}
        except (ValueError, TypeError, AttributeError):
            return None

    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None:
        """Record the language prior (once per KB: it depends only on the embedder)."""
        data = json.dumps({k: [round(float(x), 7) for x in v] for k, v in prior.items()})
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_PRIOR, data))
        self._db.execute("DELETE FROM meta WHERE key=?", (_CENTERING,))  # refit with the prior
        self._db.execute("COMMIT")
        self._index = None

    def _recorded_centering(self, gen: int) -> Centering | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (_CENTERING,)).fetchone()
        if row is None or not row[0].startswith(f"{gen}:"):
            return None
        try:
            return Centering.from_json(row[0].split(":", 1)[1])
        except (ValueError, TypeError, AttributeError):
            return None

    def _trusted_faiss_bytes(self, path: Path, gen: int) -> bytes | None:
        """The file's bytes if kb wrote exactly them for this generation, else None (rebuild from SQLite).

        FAISS's reader trusts the sizes written in the file, so a truncated or hostile file could make it
        allocate without bound; only bytes whose digest kb recorded in meta.sqlite ever reach it."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (_FAISS_DIGEST,)).fetchone()
        if row is None or not row[0].startswith(f"{gen}:"):
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data if row[0] == f"{gen}:{_digest(data)}" else None

    def dense_index_saved(self) -> bool:
        """Whether the current generation's index file (the very bytes kb wrote) and centring are on disk (else a
        reader rebuilds them, and the next ingest saves them again)."""
        return saved_index_state(self._db, self.folder)[0] == "saved"

    def save_dense_index(self) -> Path:
        """Write the FAISS file for the current generation (atomically) and drop older ones."""
        index = self.dense_index()
        gen = self._index[0]
        path = self.folder / f"vectors-{gen}.faiss"
        if self._trusted_faiss_bytes(path, gen) is None:
            try:
                data = dense.write_index(index.faiss, path)
                manifests.fsync_dir(self.folder)
                # one transaction, and not self.transaction(): a derived cache does not bump the generation
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_FAISS_DIGEST, f"{gen}:{_digest(data)}"))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 (_CENTERING, f"{gen}:{index.centering.to_json()}"))
                self._db.execute("COMMIT")
            except (RuntimeError, OSError, sqlite3.OperationalError) as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"cannot write {path} ({str(e).splitlines()[-1]}); the documents are saved "
                                   "in meta.sqlite and kb rebuilds this file from them, but free disk space and "
                                   "run the command again") from e
        for old in self.folder.glob("vectors-*.faiss*"):
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def dense_query(self, doc_ids: list[str] | None = None) -> DenseQuery:
        """A dense search over the current generation that another thread may run: the index and the allowed
        chunk ids are read here, on the thread that owns the SQLite connection."""
        index = self.dense_index()
        allowed = None if doc_ids is None else self.chunk_ids_of(doc_ids)
        return lambda vector, limit, lang: index.search(vector, limit, allowed, lang)

    def centering(self) -> Centering:
        return self.dense_index().centering

    def preset_centering(self, centering: Centering) -> None:
        """Nothing to do: the local store fits its centring from all vectors whenever it builds the index."""

    def finished(self) -> bool:
        return self.dense_index_saved()

    def finish(self) -> None:
        self.save_dense_index()

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def export(self) -> Iterator[Record]:
        """Every document with its chunks, raw vectors and terms, from one read snapshot."""
        reader = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            reader.execute("BEGIN")
            docs = reader.execute("SELECT doc_id, path, title, content_hash, size, mtime, ingested_at, file_type, "
                                  "text FROM documents ORDER BY path")
            for doc_id, path, title, digest, size, mtime, at, file_type, text in docs.fetchall():
                rows = reader.execute(
                    "SELECT c.chunk_id, c.ordinal, c.text, c.section, c.page, c.char_start, c.char_end, c.vector, "
                    "f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.chunk_id WHERE c.doc_id=? "
                    "ORDER BY c.ordinal", (doc_id,)).fetchall()
                chunks = [Chunk(r[0], doc_id, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
                vectors = np.frombuffer(b"".join(r[7] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                info = DocumentInfo(doc_id, path, title, digest, size, mtime, len(rows), at, file_type)
                yield Record(info, text, chunks, vectors, [r[8] for r in rows])
        finally:
            reader.close()


def saved_index_state(db: sqlite3.Connection, folder: Path) -> tuple[str, Path, bytes | None]:
    """How the current generation's FAISS file stands, read through any connection (a read-only one will do):
    (state, path, trusted bytes). state is 'saved' (kb wrote exactly these bytes, with their centring),
    'missing' (no file, or none recorded for this generation: a crash before the write, or never saved) or
    'damaged' (the bytes are not the ones kb wrote). Readers rebuild the index from meta.sqlite unless 'saved';
    the same rule as Store.dense_index, for `kb doctor`."""
    gen = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
    path = folder / f"vectors-{gen}.faiss"
    recorded = db.execute("SELECT value FROM meta WHERE key=?", (_FAISS_DIGEST,)).fetchone()
    centering = db.execute("SELECT value FROM meta WHERE key=?", (_CENTERING,)).fetchone()
    if recorded is None or not recorded[0].startswith(f"{gen}:") or not path.is_file():
        return "missing", path, None
    if centering is None or not centering[0].startswith(f"{gen}:"):
        return "missing", path, None
    data = path.read_bytes()
    return ("saved", path, data) if recorded[0] == f"{gen}:{_digest(data)}" else ("damaged", path, None)


class LocalCatalog:
    """Knowledge bases as folders under $KB_HOME/kbs, each with a writer lock file beside it.

    A replacement (rebuild, migrate) is written into a hidden folder beside the KB and swapped in by two
    renames at the end; a crash between them is finished or undone the next time the KB is opened."""

    def __init__(self, root: Path, hnsw_threshold: int = 200_000) -> None:
        self.root = root
        self.where = str(root)
        self.hnsw_threshold = hnsw_threshold

    def folder(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "manifest.json").exists() and not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        _recover_swap(self.folder(name))
        return (self.folder(name) / "manifest.json").exists()

    def manifest(self, name: str) -> dict[str, Any]:
        if not self.exists(name):
            raise KBNotFoundError(f"no knowledge base named '{name}' in {self.root}")
        return manifests.read(self.folder(name))

    def create(self, name: str, manifest: dict[str, Any]) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        manifests.write_json_atomic(folder / "manifest.json", manifest)

    def open(self, name: str, manifest: dict[str, Any]) -> LocalStore:
        return LocalStore(self.folder(name), manifest["embedder"]["dim"], self.hnsw_threshold)

    def delete(self, name: str) -> None:
        folder = self.folder(name)
        if not folder.exists():
            raise KBNotFoundError(f"no knowledge base named '{name}'")
        with self.writer(name, 0):
            shutil.rmtree(folder)

    def writer(self, name: str, wait: float) -> _WriteLock:
        return _WriteLock(self.folder(name), wait)

    def stamp(self, name: str) -> int | None:
        """The inode of the KB's database: a rebuild swaps folders, so it changes."""
        for _ in range(20):  # another process may be between its two renames right now
            try:
                return (self.folder(name) / "meta.sqlite").stat().st_ino
            except FileNotFoundError:
                time.sleep(0.05)
        return None

    def replacement(self, name: str, manifest: dict[str, Any]) -> _FolderSwap:
        return _FolderSwap(self, name, manifest)

    def location(self, name: str) -> str:
        return str(self.folder(name))

    def close(self) -> None:
        pass


class _FolderSwap:
    """A fresh KB folder beside the old one, swapped in by commit()."""

    def __init__(self, catalog: LocalCatalog, name: str, manifest: dict[str, Any]) -> None:
        self.target = catalog.folder(name)
        self.fresh = self.target.with_name(f".{name}.rebuild")
        shutil.rmtree(self.fresh, ignore_errors=True)
        self.fresh.mkdir(parents=True)
        manifests.write_json_atomic(self.fresh / "manifest.json", manifest)
        self.store = LocalStore(self.fresh, manifest["embedder"]["dim"], catalog.hnsw_threshold)

    def commit(self) -> None:
        self.store.close()
        old = self.target.with_name(f".{self.target.name}.old")
        if self.target.exists():
            self.target.rename(old)
        self.fresh.rename(self.target)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        self.store.close()
        shutil.rmtree(self.fresh, ignore_errors=True)


def _recover_swap(folder: Path) -> None:
    """Finish or undo a replacement's folder swap that a crash interrupted."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        if not folder.exists():
            old.rename(folder)
        else:
            shutil.rmtree(old, ignore_errors=True)


class _WriteLock:
    """A KB folder's writer lock; `wait` seconds before giving up with a clear message."""

    def __init__(self, folder: Path, wait: float) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(folder.with_name(folder.name + ".lock")))
        self._folder = folder
        self._wait = wait

    def __enter__(self) -> None:
        try:
            self._lock.acquire(timeout=self._wait)
        except Timeout as e:
            raise LockedError(
                f"knowledge base '{self._folder.name}' is being written by another process (lock "
                f"{self._lock.lock_file}); wait for it to finish, or pass --wait SECONDS"
            ) from e

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
