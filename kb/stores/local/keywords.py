"""The local store's keyword engines: the tantivy index (store.keyword_engine: tantivy, the default), BM25 that
does not score every match, and FTS5's query (`fts5_search`: the fallback, and store.keyword_engine: fts5).

FTS5's bm25() scores every chunk that holds a query term, so its time grows with the corpus; tantivy (Rust,
block-max WAND) skips the postings that cannot reach the top k. The index lives in the KB's folder
(`keywords.tantivy/`) and is derived data, as the FAISS file is: meta.sqlite stays the truth, and FTS5 is still
written (it keeps each chunk's terms for rebuilds, exports and term counts, and serves searches while tantivy is
behind).

Terms are kb.text.keywords's (jieba words for Chinese, whole words otherwise); tantivy's `simple` tokenizer
splits them at punctuation as FTS5's unicode61 does, then folds accents and stems English (Snowball's English,
where FTS5 has Porter's first stemmer). Fields: the terms (frequencies, no positions), doc_id (raw, for the
document filter and deletions) and chunk_id (a fast column).

The generation tag: one extra document (doc_id GENERATION_KEY, chunk_id = the SQLite generation it reflects) is
replaced in every tantivy commit, so the tag and the index change atomically. A searcher whose tag differs
from meta.sqlite's generation is behind (a crash between the SQLite commit and tantivy's, or writes made with
the fts5 engine) and is not used: searches go to FTS5. The next writer brings it up to date (`sync`: the
documents of meta.sqlite's keyword_pending table, which each transaction fills, or every row, reporting its
progress: a KB built with fts5 is upgraded so on its next ingest). Until then the KB has no index, or one that is
behind, and FTS5 answers; nothing is written by a reader: the index is created by the writer only, and a folder a
reader cannot open (tantivy takes a lock file, so a read-only folder) leaves its searches to FTS5. Leaves out:
when to sync and publish (store.py: before a writer's first change, and in finish()).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kb.errors import StorageError
from kb.text.keywords import fts_query, query_terms

FOLDER = "keywords.tantivy"
FORMAT = 1  # a change of schema or tokenizer: an index of another format is rebuilt from meta.sqlite
GENERATION_KEY = f"\x00kb-keywords-v{FORMAT}"
TOKENIZER = "kb_terms"
WRITER_HEAP = 128_000_000
PENDING_SINCE = "keyword_pending_since"  # meta key: keyword_pending holds every document changed since this generation
PROGRESS_EVERY = 20_000  # chunks between two progress reports of a full build (about 0.5 s at 1M chunks)


def _tantivy():
    try:
        import tantivy
    except ImportError as e:
        raise ImportError("store.keyword_engine 'tantivy' (the default) needs the tantivy package, one of kb's "
                          "dependencies: pip install 'tantivy>=0.27,<0.28' (or reinstall kb), or set "
                          "store.keyword_engine: fts5") from e
    return tantivy


class TantivyKeywords:
    """A KB folder's tantivy index: search for any thread, and a writer opened on the first change."""

    def __init__(self, folder: Path) -> None:
        tv = self._tv = _tantivy()
        self.path = folder / FOLDER
        builder = tv.SchemaBuilder()
        builder.add_text_field("terms", tokenizer_name=TOKENIZER, index_option="freq")
        builder.add_text_field("doc_id", tokenizer_name="raw", index_option="basic")
        builder.add_integer_field("chunk_id", fast=True, indexed=False)
        self.schema = builder.build()
        self.analyzer = (tv.TextAnalyzerBuilder(tv.Tokenizer.simple()).filter(tv.Filter.lowercase())
                         .filter(tv.Filter.ascii_fold()).filter(tv.Filter.stemmer("english")).build())
        self._index = self._open()  # None until the writer creates it, or where it cannot be opened
        self._writer = None
        self.dirty = False  # changes not yet committed

    def _open(self):
        """The committed index, if the folder holds one this process can open (tantivy takes a lock file even to
        read: a read-only folder cannot be opened), else None: searches go to FTS5. Never writes a new folder."""
        try:
            if not self.path.is_dir() or not self._tv.Index.exists(str(self.path)):
                return None
            index = self._tv.Index(self.schema, path=str(self.path), reuse=True)
        except (OSError, ValueError):  # another format, a damaged folder, no write access: the writer rebuilds it
            return None
        index.register_tokenizer(TOKENIZER, self.analyzer)
        return index

    def _created(self):
        """The writer's index: opened, or made afresh (a KB built with fts5, another format, a damaged folder:
        derived data, rebuilt from meta.sqlite by sync)."""
        if self._index is None:
            self._index = self._open()
        if self._index is None:
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                self.path.mkdir()
                index = self._tv.Index(self.schema, path=str(self.path), reuse=False)
            except (OSError, ValueError) as e:
                raise StorageError(f"cannot create the keyword index {self.path} ({e}); fix the folder's "
                                   "permissions, or set store.keyword_engine: fts5") from e
            index.register_tokenizer(TOKENIZER, self.analyzer)
            self._index = index
        return self._index

    # -- reading -------------------------------------------------------------------------------------------
    def searcher(self):
        """The last committed state, with the SQLite generation it reflects (None: never committed by kb); (None,
        None) without an index (one the writer created since this store opened is picked up here)."""
        if self._index is None:
            self._index = self._open()
            if self._index is None:
                return None, None
        searcher = self._index.searcher()
        hits = searcher.search(self._tv.Query.term_query(self.schema, "doc_id", GENERATION_KEY), 1, count=False).hits
        gen = searcher.fast_field_values("chunk_id", [hits[0][1]])[0] if hits else None
        return searcher, gen

    def search_if_current(self, db: sqlite3.Connection, query: str, limit: int,
                          doc_ids: list[str] | None) -> tuple[list[tuple[int, float]]] | None:
        """(search's hits,) when the committed index reflects the generation `db` reads, else None."""
        searcher, tagged = self.searcher()
        return (self.search(searcher, query, limit, doc_ids),) if tagged == _generation(db) else None

    def search(self, searcher, query: str, limit: int, doc_ids: list[str] | None) -> list[tuple[int, float]]:
        """(chunk_id, bm25 >= 0) best first: any of the query's terms, only in doc_ids when given."""
        tv = self._tv
        tokens = dict.fromkeys(tok for t in query_terms(query) for tok in self.analyzer.analyze(t))
        if not tokens or doc_ids == []:
            return []
        q = tv.Query.boolean_query([(tv.Occur.Should, tv.Query.term_query(self.schema, "terms", t)) for t in tokens])
        if doc_ids is not None:  # inside the engine: the disjunction is intersected with the documents' postings
            allowed = tv.Query.const_score_query(tv.Query.term_set_query(self.schema, "doc_id", list(doc_ids)), 0.0)
            q = tv.Query.boolean_query([(tv.Occur.Must, q), (tv.Occur.Must, allowed)])
        hits = searcher.search(q, limit, count=False).hits
        ids = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        return [(int(i), float(score)) for i, (score, _) in zip(ids, hits)]

    # -- writing (the KB's writer only) --------------------------------------------------------------------
    def _writing(self):
        if self._writer is None:
            try:
                self._writer = self._created().writer(heap_size=WRITER_HEAP, num_threads=1)
            except ValueError as e:
                raise StorageError(f"cannot write the keyword index {self.path} ({e}); is another kb process "
                                   "writing this KB?") from e
        return self._writer

    def replace(self, doc_id: str, rows: Iterable[tuple[int, str]]) -> None:
        """Drop a document's chunks and add (chunk_id, terms) rows in their place (published by commit)."""
        writer = self._writing()
        self.dirty = True
        writer.delete_documents_by_term("doc_id", doc_id)
        for chunk_id, terms in rows:
            writer.add_document(self._tv.Document(chunk_id=chunk_id, doc_id=doc_id, terms=terms))

    def clear(self) -> None:
        self._writing().delete_all_documents()
        self.dirty = True

    def commit(self, generation: int) -> None:
        """Publish the changes, tagged with the SQLite generation they bring the index to, in one commit."""
        writer = self._writing()
        writer.delete_documents_by_term("doc_id", GENERATION_KEY)
        writer.add_document(self._tv.Document(chunk_id=generation, doc_id=GENERATION_KEY))
        writer.commit()
        self.dirty = False
        self._index.reload()

    def close(self) -> None:
        """Let go of the writer (and its lock on the folder), waiting for its merges."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            if self.dirty:  # a session that failed before finish(): its changes wait for the next sync
                writer.rollback()
                self.dirty = False
            writer.wait_merging_threads()

    def release(self) -> None:
        """close(), and let go of the index itself: its files are memory-mapped until it is dropped (a KB on a
        mount that is to be unmounted, a folder to be removed on Windows)."""
        self.close()
        self._index = None

    # -- keeping up with meta.sqlite (the writer, under the KB's lock) -------------------------------------
    def sync(self, db: sqlite3.Connection, progress: Callable[[int, int], None] | None = None) -> None:
        """Bring a committed index that is behind meta.sqlite up to date and commit it: the documents in
        keyword_pending when it records every change since the index's tag, else every row (a new index, an
        index of another format, a KB built or written with the fts5 engine), telling `progress` (chunks done,
        chunks in all) as it goes. A kill before the commit leaves the last one, behind, and FTS5 serving."""
        _, tagged = self.searcher()
        gen = _generation(db)
        if tagged == gen:
            return
        since = db.execute("SELECT value FROM meta WHERE key=?", (PENDING_SINCE,)).fetchone()
        if tagged is not None and since is not None and int(since[0]) <= tagged:
            for (doc_id,) in db.execute("SELECT doc_id FROM keyword_pending").fetchall():
                self.replace(doc_id, db.execute(_ROWS + " WHERE c.doc_id=?", (doc_id,)))
        else:
            self._build(db, progress or (lambda done, total: None))
        self.publish(db)

    def _build(self, db: sqlite3.Connection, progress: Callable[[int, int], None]) -> None:
        """Every chunk of meta.sqlite, in place of whatever the index held (committed by the caller)."""
        self.clear()
        writer, doc = self._writing(), self._tv.Document
        total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        progress(0, total)
        done = 0
        for doc_id, chunk_id, terms in db.execute(_ALL_ROWS):
            writer.add_document(doc(chunk_id=chunk_id, doc_id=doc_id, terms=terms))
            done += 1
            if done % PROGRESS_EVERY == 0:
                progress(done, total)
        if done % PROGRESS_EVERY or not done:
            progress(done, total)

    def publish(self, db: sqlite3.Connection) -> None:
        """Commit at meta.sqlite's generation, then record that nothing is pending since it (a crash between the
        two leaves pending documents that are already in: re-applying them later is harmless)."""
        gen = _generation(db)
        self.commit(gen)
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM keyword_pending")
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PENDING_SINCE, str(gen)))
        db.execute("COMMIT")

    def current(self, db: sqlite3.Connection) -> bool:
        """Whether the committed index reflects meta.sqlite's generation, read through `db` (False: no index)."""
        return self.searcher()[1] == _generation(db)


_ALL_ROWS = "SELECT c.doc_id, c.chunk_id, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.chunk_id"
_ROWS = "SELECT c.chunk_id, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.chunk_id"


def _generation(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])


def fts5_search(db: sqlite3.Connection, query: str, limit: int,
                    doc_ids: list[str] | None) -> list[tuple[int, float]]:
    """(chunk_id, bm25) best first through one connection, by FTS5 (store.keyword_engine fts5, and tantivy's fallback
    while its index is behind). FTS5's bm25() is negative."""
    match = fts_query(query)
    if match is None or doc_ids == []:
        return []
    sql = "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ?"
    params: list[Any] = [match]
    if doc_ids is not None:
        sql += f" AND rowid IN (SELECT chunk_id FROM chunks WHERE doc_id IN ({','.join('?' * len(doc_ids))}))"
        params.extend(doc_ids)
    rows = db.execute(sql + " ORDER BY s LIMIT ?", (*params, limit))
    return [(r[0], -r[1]) for r in rows]


def index_state(db: sqlite3.Connection, folder: Path) -> str:
    """How a KB folder's tantivy index stands against meta.sqlite read through `db` (a read-only connection will
    do; nothing is written), for `kb doctor`: 'current'; 'behind' (tagged with an older generation: a crash, or
    writes made with the fts5 engine); 'missing' (never committed: a KB built with fts5 or by a kb before the
    index, a first build that was killed, or a folder this process cannot open). Searches use FTS5 unless current;
    the next ingest brings it up to date."""
    tagged = TantivyKeywords(folder).searcher()[1]
    return "missing" if tagged is None else "current" if tagged == _generation(db) else "behind"
