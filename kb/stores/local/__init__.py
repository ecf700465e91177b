"""The local store: a knowledge base in one folder, SQLite for documents, chunks and vectors, FAISS for dense
search, tantivy for keyword search (SQLite FTS5 with store.keyword_engine fts5). The default; kb/stores/base.py says what every store
provides.

Layout of one KB folder:
    manifest.json         format version, embedder and chunking settings (written once, at creation)
    meta.sqlite           the truth: documents (their text zlib-compressed; plain in KBs written before), chunks
                          (+ vectors as float16 blobs; float32 in KBs written before), each language's sum of
                          vectors, the OCR lines of scanned pages and photos (for showing a passage on its
                          page), and the FTS5 keyword index, kept only with store.keyword_engine fts5
    vectors-<gen>.faiss   the dense index as of commit generation <gen>, derived from the vectors in SQLite and
                          updated in place by later commits (index.py)
    ensemble-<hash>-<gen>.faiss  the same for each other embedder of an ensemble
    keywords.tantivy/     the BM25 index (store.keyword_engine tantivy, the default), tagged with the generation it
                          reflects; built from meta.sqlite (the chunks' text) by the next ingest where it is
                          missing or behind

Every change is one SQLite transaction (WAL mode), which is the commit point: a process killed at any
moment leaves the last committed state. The FAISS file is derived data tagged with the generation it
was saved at; if it is stale (a crash between the SQLite commit and the file write, or a save deferred on a large
KB) a reader brings it up to date from SQLite (the chunks added and removed since), and if it is missing it is
rebuilt from SQLite. FAISS reads only a file whose digest kb recorded in SQLite when it wrote it: a
damaged or foreign file is rebuilt from SQLite, never parsed. Nothing is ever unpickled: FAISS has its
own binary format, the rest is SQL/JSON.

The parts: schema.py (the tables, opening and checking meta.sqlite), store.py (LocalStore: writes, reads,
keyword search, export), keywords.py (the tantivy index kept in step, FTS5's query, moving a KB between them), index.py
(the FAISS file, dense search, centring), catalog.py (the KB folders, writer locks, replacement by folder swap).
This package gives their public names in one place.
"""

from __future__ import annotations

from kb.stores.local.catalog import LocalCatalog, _FolderSwap, _WriteLock
from kb.stores.local.index import saved_index_state
from kb.stores.local.schema import SCHEMA_VERSION
from kb.stores.local.store import LocalStore

__all__ = ["SCHEMA_VERSION", "LocalCatalog", "LocalStore", "_FolderSwap", "_WriteLock", "saved_index_state"]
