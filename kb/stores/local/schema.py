"""The local store's SQLite database: its tables, the keys it keeps in `meta`, and opening it with a check.

A KB's meta.sqlite is the truth (documents with their text zlib-compressed (text_blob, stored_text; plain text in
KBs written before), chunks with their vectors as float16 blobs (float32 in KBs written before: vector_blob,
blob_vector), the FTS5 keyword index (rows kept with store.keyword_engine fts5 only: keywords.py), and the other embedders' vectors of a KB built with an ensemble, `ensemble_vectors`: a table that KBs
built before it get, empty, when first opened, and `keyword_pending`: the documents changed since the tantivy
keyword index's last commit, written in the same transactions, kb/stores/local/keywords.py; and `language_sums`:
each embedder's ('' the main one) count and float64 sum of chunk vectors per language, kept by every transaction, from which the centring is
refitted without reading the vectors, kb/stores/local/index.py; and `page_lines`: the OCR lines of scanned pages and
photos, for showing a passage on its page, kb/evidence.py); `connect` creates the tables in a new file and refuses a file of another schema version or of other
columns with an IndexFormatError naming the file and the fix, and opens a file this process cannot write (a
read-only folder) read-only, for searching (`read_only_uri`). There are no migrations: SCHEMA_VERSION 1 is
the only version, and a KB of another one is rebuilt (`kb ingest --rebuild`). What is read and written is in
store.py and index.py.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path

import numpy as np

from kb.errors import IndexFormatError

SCHEMA_VERSION = 1
# 16 KiB pages: chunk rows (about 1.3 KB with their vector) land at random places of the table (chunk ids are
# hashes), and 4 KiB pages that hold two or three of them were a quarter empty: 16 KiB made the chunks table 11%
# smaller at 50k chunks (32 KiB: 3% more, for twice the bytes per row read)
PAGE_SIZE = 16384

SCHEMA = """
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
{fts5_table};
CREATE TABLE IF NOT EXISTS ensemble_vectors (
    model TEXT NOT NULL, chunk_id INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, chunk_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ensemble_by_chunk ON ensemble_vectors(chunk_id);
CREATE TABLE IF NOT EXISTS keyword_pending (doc_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS page_lines (doc_id TEXT NOT NULL, page INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (doc_id, page)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS language_sums (
    model TEXT NOT NULL, lang TEXT NOT NULL, count INTEGER NOT NULL, sum BLOB NOT NULL,
    PRIMARY KEY (model, lang)) WITHOUT ROWID;
"""
FTS5_TABLE = ("CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING "
              "fts5(terms, tokenize='porter unicode61 remove_diacritics 2')")
SCHEMA = SCHEMA.format(fts5_table=FTS5_TABLE)
COLUMNS = {
    "documents": ["doc_id", "path", "title", "file_type", "content_hash", "size", "mtime", "ingested_at", "text"],
    "chunks": ["chunk_id", "doc_id", "ordinal", "text", "section", "page", "char_start", "char_end", "vector"],
}
FAISS_DIGEST = "faiss_file"  # meta key: "<generation>:<blake2b of the FAISS file kb wrote>"
PRIOR = "language_prior"  # meta key: JSON of the embedder's per-language means over generic text
CENTERING = "centering"  # meta key: "<generation>:<JSON of the per-language means the FAISS file holds>"
SUMS_KEPT = "language_sums_kept"  # meta key: language_sums is kept by every transaction (set at creation or catch-up)
DENSE_LOG = "dense_rebuilds"  # meta key: JSON list of the dense index's last full builds and why
DEFERRED = "faiss_deferred"  # meta key: the generation whose finish left the FAISS file behind on purpose


def read_only_uri(db_path: Path) -> str:
    """The URI of a read-only connection to meta.sqlite. In a folder this process cannot write, SQLite cannot make
    the WAL's shared-memory file, so the file is opened as immutable (no writer can change it there) unless a WAL
    file is left whose pages must be read."""
    uri = f"file:{db_path}?mode=ro"
    wal = db_path.with_name(db_path.name + "-wal")
    if not os.access(db_path.parent, os.W_OK) and not wal.exists():
        uri += "&immutable=1"
    return uri


def _writable(db_path: Path) -> bool:
    return os.access(db_path.parent, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK))


def connect(db_path: Path) -> sqlite3.Connection:
    """meta.sqlite opened for the store (WAL, autocommit: the store begins its own transactions), created if new;
    read-only where this process cannot write it (a reader of a read-only folder: its writes fail as a full
    disk's do, with a StorageError)."""
    try:
        if _writable(db_path):
            db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new file only: an existing one keeps its own
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA wal_autocheckpoint=256")  # 4 MiB of 16 KiB pages, as SQLite's 1000 of 4 KiB
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        else:
            db = sqlite3.connect(read_only_uri(db_path), uri=True, timeout=30, isolation_level=None,
                                 check_same_thread=False)
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version is None:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, '1')", (SUMS_KEPT,))
        elif version[0] != str(SCHEMA_VERSION):
            raise IndexFormatError(
                f"{db_path} has schema version {version[0]}; this kb reads {SCHEMA_VERSION}. "
                "Rebuild the KB with `kb ingest --rebuild`."
            )
        for table, columns in COLUMNS.items():
            have = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            if have != columns:
                raise IndexFormatError(f"{db_path} is not a kb database: table '{table}' has columns "
                                       f"{have}, kb expects {columns}. Rebuild the KB with `kb ingest --rebuild`.")
    except sqlite3.DatabaseError as e:
        raise IndexFormatError(f"{db_path} is not a usable kb database ({e})") from e
    return db


def vector_blob(vector: np.ndarray) -> bytes:
    """A vector as meta.sqlite stores it: float16, half of float32's bytes (768 per 384-dim vector). The dense
    index stores float16 too (kb/stores/dense.py), and exact search on float16 vectors ranks as on float32
    (measured on the dev set's e5 vectors: kb/stores/local/__init__.py)."""
    return np.asarray(vector, dtype="<f2").tobytes()


def text_blob(text: str) -> bytes:
    """A document's full text as meta.sqlite stores it: zlib-compressed UTF-8 (a third to a half of its bytes;
    read for citations and the neighbours of a passage, never searched)."""
    return zlib.compress(text.encode("utf-8"), 6)


def stored_text(value: str | bytes) -> str:
    """documents.text as a string: compressed (text_blob), or plain text in KBs written before."""
    return zlib.decompress(value).decode("utf-8") if isinstance(value, bytes) else value


def blob_vector(blob: bytes, dim: int, source: Path) -> np.ndarray:
    """A stored vector as float32: float16 bytes, or float32 in KBs written before kb stored float16 (each blob
    says which by its size); another size is an error naming the file and the fix."""
    if len(blob) == dim * 2:
        return np.frombuffer(blob, dtype="<f2").astype(np.float32)
    if len(blob) == dim * 4:
        return np.frombuffer(blob, dtype="<f4")
    raise IndexFormatError(f"{source} holds a vector of {len(blob)} bytes; the manifest says {dim} dimensions "
                           f"({dim * 2} bytes, or {dim * 4} in older KBs). Rebuild the KB with `kb ingest --rebuild`.")


def blob_vectors(blobs: list[bytes], dim: int, source: Path) -> np.ndarray:
    """Stored vectors as a float32 [n, dim] array."""
    out = np.empty((len(blobs), dim), dtype=np.float32)
    for i, blob in enumerate(blobs):
        out[i] = blob_vector(blob, dim, source)
    return out
