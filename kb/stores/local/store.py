"""The local store: one knowledge base in one folder (see kb/stores/local/__init__.py for the layout).

`LocalStore` is kb/stores/base.py's Store over meta.sqlite: the documents and their chunks written one
transaction per document (WAL mode; the transaction is the commit point, and bumps the generation that tags
the FAISS file), the reads (documents, chunks, neighbours, vectors, filters), the keyword search (tantivy,
kept in step by keywords.py, with FTS5 as its fallback; FTS5 alone with store.keyword_engine fts5) and the
export for `kb migrate`. It leaves out the schema and opening the file (schema.py), the FAISS file, the dense
search and the centring (index.py, its base class) and the folders, locks and swaps of a catalog (catalog.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import StorageError
from kb.stores.base import CHUNK_FIELDS, KeywordQuery, Record, SideVectors, batches, filter_documents
from kb.stores.local import keywords
from kb.stores.local.index import MAIN, LocalDenseIndex
from kb.stores.local.keywords import TantivyKeywords, chunk_terms, fts5_kept, fts5_search
from kb.stores.local.schema import (
    blob_vector,
    blob_vectors,
    connect,
    read_only_uri,
    stored_text,
    text_blob,
    vector_blob,
)
from kb.text.lang import language
from kb.types import Chunk, DocumentInfo, DocumentState


class LocalStore(LocalDenseIndex):
    """One KB folder. Writers must hold the KB's lock (LocalCatalog.writer); readers need none."""

    def __init__(self, folder: Path, dim: int, hnsw_threshold: int = 200_000,
                 ensemble: dict[str, int] | None = None, keyword_engine: str = "tantivy") -> None:
        self.folder = folder
        self.where = str(folder)
        self.dim = dim
        self.ensemble_dims = dict(ensemble or {})  # the other embedders' model -> dimension
        self.hnsw_threshold = hnsw_threshold
        self.db_path = folder / "meta.sqlite"
        self._db = connect(self.db_path)
        self._init_dense()  # one dense index per embedder (index.py)
        self._sums_started = False
        self._readers = threading.local()  # keyword_query's read-only connection per thread
        self._opened_readers: list[sqlite3.Connection] = []
        self.keyword_engine = keyword_engine
        self._keywords = TantivyKeywords(folder) if keyword_engine == "tantivy" else None
        self._tantivy_reader: TantivyKeywords | None = None  # the fts5 engine's reader of a KB written with tantivy
        self._keywords_synced = False
        # written with fts5 beside a tantivy index: it falls behind, and keyword_pending does not say by how much
        self._tantivy_left = self._keywords is None and (folder / keywords.FOLDER).exists()

    def close(self) -> None:
        for engine in (self._keywords, self._tantivy_reader):
            if engine is not None:
                engine.release()
        self._keywords_synced = False
        for reader in self._opened_readers:
            reader.close()
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, and bump the generation; rolled back on any error."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                if self._tantivy_left:
                    self._db.execute("DELETE FROM meta WHERE key=?", (keywords.PENDING_SINCE,))
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
    def document_states(self) -> dict[str, DocumentState]:
        rows = self._db.execute("SELECT path, content_hash, size, mtime, doc_id FROM documents")
        return {r[0]: DocumentState(r[1], r[2], r[3], r[4]) for r in rows}

    _DOCUMENTS = ("SELECT d.doc_id, d.path, d.title, d.content_hash, d.size, d.mtime, "
                  "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id), d.ingested_at, d.file_type "
                  "FROM documents d")

    def documents(self) -> list[DocumentInfo]:
        return [DocumentInfo(*r) for r in self._db.execute(self._DOCUMENTS + " ORDER BY d.path")]

    def document(self, doc_id: str) -> DocumentInfo | None:
        row = self._db.execute(self._DOCUMENTS + " WHERE d.doc_id=?", (doc_id,)).fetchone()
        return DocumentInfo(*row) if row else None

    def document_text(self, doc_id: str) -> str | None:
        row = self._db.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return stored_text(row[0]) if row else None

    def page_lines(self, doc_id: str, page: int) -> bytes | None:
        try:
            row = self._db.execute("SELECT data FROM page_lines WHERE doc_id=? AND page=?", (doc_id, page)).fetchone()
        except sqlite3.OperationalError:  # a read-only KB from before the table: none kept
            return None
        return row[0] if row else None

    def put_documents(self, records: list[Record]) -> int:
        """Replace each document and all its chunks, one transaction per document. Returns chunks removed."""
        self._keyword_sync()
        self._sums_sync()
        return sum(self._put(r) for r in records)

    def _put(self, record: Record) -> int:
        info, text, chunks, terms = record.info, record.text, record.chunks, record.terms
        vectors = np.ascontiguousarray(record.vectors, dtype=np.float32)
        with self.transaction() as db:
            removed = self._delete_doc(db, info.doc_id, info.path)
            for model, side in record.ensemble.items():
                side_vectors = np.ascontiguousarray(side.vectors, dtype=np.float32)
                db.executemany("INSERT INTO ensemble_vectors VALUES (?,?,?)",
                               [(model, chunks[r].chunk_id, vector_blob(v)) for r, v in zip(side.rows, side_vectors)])
            db.execute(
                "INSERT INTO documents VALUES (?,?,?,?,?,?,?,?,?)",
                (info.doc_id, info.path, info.title, info.file_type, info.content_hash, info.size,
                 info.mtime, info.ingested_at, text_blob(text)),
            )
            db.executemany(
                "INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?,?)",
                [(c.chunk_id, c.doc_id, c.ordinal, c.text, c.section, c.page, c.char_start, c.char_end,
                  vector_blob(v)) for c, v in zip(chunks, vectors)],
            )
            if self._keywords is None:  # store.keyword_engine fts5; tantivy's KBs keep no FTS5 rows
                db.executemany(
                    "INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)",
                    [(c.chunk_id, t) for c, t in zip(chunks, terms)],
                )
            db.executemany("INSERT INTO page_lines VALUES (?,?,?)",
                           [(info.doc_id, page, data) for page, data in record.page_lines.items()])
            langs = [language(c.text) for c in chunks]
            self._keep_sums(db, MAIN, vectors, langs, 1)
            for model, side in record.ensemble.items():
                self._keep_sums(db, model, side.vectors, [langs[r] for r in side.rows], 1)
            if self._keywords is not None:
                db.execute("INSERT OR IGNORE INTO keyword_pending VALUES (?)", (info.doc_id,))
        if self._keywords is not None:  # published by finish() or a while later (_publish_due)
            self._keywords.replace(info.doc_id, [(c.chunk_id, t) for c, t in zip(chunks, terms)])
            self._publish_due()
        return removed

    def _publish_due(self) -> None:
        """A long ingest publishes the keyword index every keywords.PUBLISH_SECONDS: until then the documents it
        changed are left out of other readers' keyword searches (dense search finds them)."""
        if self._keywords is not None and self._keywords.due():
            self._keywords.publish(self._db)

    def touch_document(self, path: str, mtime: float) -> None:
        """Record a new mtime for a file whose content did not change."""
        with self.transaction() as db:
            db.execute("UPDATE documents SET mtime=? WHERE path=?", (mtime, path))

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and their chunks in one transaction. Returns chunks removed."""
        removed, doc_ids = 0, list(doc_ids)
        self._keyword_sync()
        self._sums_sync()
        with self.transaction() as db:
            for doc_id in doc_ids:
                removed += self._delete_doc(db, doc_id, None)
                if self._keywords is not None:
                    db.execute("INSERT OR IGNORE INTO keyword_pending VALUES (?)", (doc_id,))
        if self._keywords is not None:
            for doc_id in doc_ids:
                self._keywords.replace(doc_id, [])
            self._publish_due()
        return removed

    def _delete_doc(self, db: sqlite3.Connection, doc_id: str, path: str | None) -> int:
        rows = db.execute("SELECT chunk_id, vector, text FROM chunks WHERE doc_id=?", (doc_id,)).fetchall()
        ids = [r[0] for r in rows]
        if rows:
            _, vectors, langs = self._rows_to_arrays(rows)
            self._keep_sums(db, MAIN, vectors, langs, -1)
            for model, dim in self.ensemble_dims.items():
                side = db.execute("SELECT e.chunk_id, e.vector, c.text FROM ensemble_vectors e JOIN chunks c "
                                  "USING (chunk_id) WHERE e.model=? AND c.doc_id=?", (model, doc_id)).fetchall()
                if side:
                    _, vectors, langs = self._rows_to_arrays(side, dim)
                    self._keep_sums(db, model, vectors, langs, -1)
        if self._keywords is None:
            db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(i,) for i in ids])
        db.executemany("DELETE FROM ensemble_vectors WHERE chunk_id=?", [(i,) for i in ids])
        db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        db.execute("DELETE FROM page_lines WHERE doc_id=?", (doc_id,))
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
        for part in batches(ids, 500):
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
        """(chunk_id, bm25) best first, optionally only in some documents."""
        return self._keyword_search(self._db, query, limit, doc_ids)

    def keyword_query(self, doc_ids: list[str] | None = None) -> KeywordQuery:
        """keyword_search for another thread, on a read-only connection of that thread's own: SQLite runs two
        connections' queries side by side, one connection's one at a time (the dictionary search overlaps the
        query's own keyword search this way)."""
        def run(query: str, limit: int) -> list[tuple[int, float]]:
            reader = getattr(self._readers, "db", None)
            if reader is None:
                reader = self._readers.db = sqlite3.connect(read_only_uri(self.db_path), uri=True,
                                                            check_same_thread=False)
                self._opened_readers.append(reader)
            return self._keyword_search(reader, query, limit, doc_ids)
        return run

    def _keyword_search(self, db: sqlite3.Connection, query: str, limit: int,
                        doc_ids: list[str] | None) -> list[tuple[int, float]]:
        """tantivy as keywords.py's search_db decides (its index, FTS5 while it is behind on a KB that keeps FTS5,
        else the index without the documents changed since); FTS5 with the fts5 engine, or tantivy's index while
        a KB written with tantivy has not been through an fts5 ingest yet."""
        if self._keywords is not None:
            return self._keywords.search_db(db, query, limit, doc_ids)
        if fts5_kept(db):
            return fts5_search(db, query, limit, doc_ids)
        if self._tantivy_reader is None:
            self._tantivy_reader = TantivyKeywords(self.folder)
        return self._tantivy_reader.search_db(db, query, limit, doc_ids)

    def catch_up(self, progress: Callable[[str, int, int], None] | None = None) -> None:
        """Before a write session: a tantivy index behind meta.sqlite (or none: built with fts5) catches up, and a
        KB from before the language sums gets them (index.py)."""
        tell = progress or (lambda what, done, total: None)
        self._keyword_sync(lambda done, total: tell("keywords", done, total))
        self._sums_sync(lambda done, total: tell("vectors", done, total))

    def _keyword_sync(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Once per session, before the writer's first change: a tantivy index that is behind catches up, and the
        FTS5 rows of a KB built with fts5 are let go; with the fts5 engine, a KB written with tantivy gets its
        FTS5 rows back."""
        if self._keywords_synced:
            return
        if self._keywords is not None:
            self._keywords.sync(self._db, progress)
            keywords.retire_fts5(self._db)
        else:
            keywords.restore_fts5(self._db, progress)
        self._keywords_synced = True

    def _sums_sync(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Once per session, before the writer's first change: a KB from before language_sums gets them."""
        if not self._sums_started:
            self._start_sums(progress)
            self._sums_started = True

    def finished(self) -> bool:
        keywords_done = self._keywords.current(self._db) if self._keywords is not None else fts5_kept(self._db)
        return super().finished() and keywords_done

    def finish(self) -> None:
        super().finish()
        self._keyword_sync()
        if self._keywords is not None:
            if self._keywords.dirty:
                self._keywords.publish(self._db)
            self._keywords.close()  # the next writer may be another process: it needs tantivy's writer lock
        self._keywords_synced = False

    def term_document_frequency(self, terms: list[str]) -> dict[str, int]:
        """How many chunks hold each keyword term (kb.text.keywords terms, stemmed as the index stemmed them), for
        weighting a question's terms by their rarity in this KB: FTS5's count where the KB keeps it, else the
        tantivy index's ({} before it has one)."""
        terms = [t for t in dict.fromkeys(terms) if t.strip()]
        if fts5_kept(self._db):
            return {t: self._db.execute("SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?",
                                        ('"' + t.replace('"', '""') + '"',)).fetchone()[0] for t in terms}
        if self._keywords is None and self._tantivy_reader is None:
            self._tantivy_reader = TantivyKeywords(self.folder)
        return (self._keywords or self._tantivy_reader).document_frequency(terms) or {}

    def matching_documents(self, paths: list[str] | None, file_types: list[str] | None,
                           doc_ids: list[str] | None) -> list[str]:
        """Ids of the documents that pass a filter: path globs (fnmatch), file types, document ids."""
        rows = self._db.execute("SELECT doc_id, path, file_type FROM documents")
        return filter_documents(rows, paths, file_types, doc_ids)

    def chunk_ids_of(self, doc_ids: list[str]) -> np.ndarray:
        ids: list[int] = []
        for part in batches(doc_ids, 500):
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
        for part in batches(ids, 500):
            for cid, blob in self._db.execute(
                    f"SELECT chunk_id, vector FROM chunks WHERE chunk_id IN ({','.join('?' * len(part))})", part):
                out[cid] = blob_vector(blob, self.dim, self.db_path)
        return out

    def _side_vectors(self, db: sqlite3.Connection, chunks: list[Chunk]) -> dict[str, SideVectors]:
        """The ensemble's vectors of one document's chunks, for export."""
        position = {c.chunk_id: i for i, c in enumerate(chunks)}
        out = {}
        for model, dim in self.ensemble_dims.items():
            rows = [r for part in batches(list(position), 500) for r in db.execute(
                f"SELECT chunk_id, vector FROM ensemble_vectors WHERE model=? AND chunk_id IN ({','.join('?' * len(part))})",
                (model, *part))]
            rows.sort(key=lambda r: position[r[0]])
            vectors = blob_vectors([r[1] for r in rows], dim, self.db_path)
            out[model] = SideVectors(tuple(position[r[0]] for r in rows), vectors)
        return out

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())

    def export(self) -> Iterator[Record]:
        """Every document with its chunks, raw vectors and terms, from one read snapshot."""
        reader = sqlite3.connect(read_only_uri(self.db_path), uri=True)
        try:
            reader.execute("BEGIN")
            docs = reader.execute("SELECT doc_id, path, title, content_hash, size, mtime, ingested_at, file_type, "
                                  "text FROM documents ORDER BY path")
            for doc_id, path, title, digest, size, mtime, at, file_type, text in docs.fetchall():
                rows = reader.execute(
                    "SELECT chunk_id, ordinal, text, section, page, char_start, char_end, vector FROM chunks "
                    "WHERE doc_id=? ORDER BY ordinal", (doc_id,)).fetchall()
                terms = {cid: t for _, cid, t in chunk_terms(reader, doc_id)}
                chunks = [Chunk(r[0], doc_id, r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
                vectors = blob_vectors([r[7] for r in rows], self.dim, self.db_path)
                info = DocumentInfo(doc_id, path, title, digest, size, mtime, len(rows), at, file_type)
                try:
                    lines = dict(reader.execute("SELECT page, data FROM page_lines WHERE doc_id=?", (doc_id,)))
                except sqlite3.OperationalError:  # a read-only KB from before the table
                    lines = {}
                yield Record(info, stored_text(text), chunks, vectors, [terms[r[0]] for r in rows],
                             self._side_vectors(reader, chunks), lines)
        finally:
            reader.close()

