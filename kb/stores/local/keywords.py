"""The local store's keyword engines: FTS5's query (`fts5_search`, the default) and the tantivy index
(store.keyword_engine: tantivy), BM25 that does not score every match.

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
documents of meta.sqlite's keyword_pending table, which each transaction fills, or every row). Leaves out: when
to sync and publish (store.py: before a writer's first change, and in finish()).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable
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


def _tantivy():
    try:
        import tantivy
    except ImportError as e:
        raise ImportError("store.keyword_engine 'tantivy' needs the tantivy package: pip install 'kb[tantivy]' "
                          "(or set store.keyword_engine: fts5)") from e
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
        self._index = self._open()
        self._writer = None
        self.dirty = False  # changes not yet committed

    def _open(self):
        self.path.mkdir(exist_ok=True)
        try:
            index = self._tv.Index(self.schema, path=str(self.path), reuse=True)
        except (OSError, ValueError):  # another format or a damaged folder: derived data, start again
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir()
            index = self._tv.Index(self.schema, path=str(self.path), reuse=False)
        index.register_tokenizer(TOKENIZER, self.analyzer)
        return index

    # -- reading -------------------------------------------------------------------------------------------
    def searcher(self):
        """The last committed state, with the SQLite generation it reflects (None: never committed by kb)."""
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
                self._writer = self._index.writer(heap_size=WRITER_HEAP, num_threads=1)
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

    # -- keeping up with meta.sqlite (the writer, under the KB's lock) -------------------------------------
    def sync(self, db: sqlite3.Connection) -> None:
        """Bring a committed index that is behind meta.sqlite up to date and commit it: the documents in
        keyword_pending when it records every change since the index's tag, else every row (a new index, an
        index of another format, writes made with the fts5 engine)."""
        _, tagged = self.searcher()
        gen = _generation(db)
        if tagged == gen:
            return
        since = db.execute("SELECT value FROM meta WHERE key=?", (PENDING_SINCE,)).fetchone()
        if tagged is not None and since is not None and int(since[0]) <= tagged:
            for (doc_id,) in db.execute("SELECT doc_id FROM keyword_pending").fetchall():
                self.replace(doc_id, db.execute(_ROWS + " WHERE c.doc_id=?", (doc_id,)))
        else:
            self.clear()
            writer, doc = self._writing(), self._tv.Document
            for doc_id, chunk_id, terms in db.execute(_ALL_ROWS):
                writer.add_document(doc(chunk_id=chunk_id, doc_id=doc_id, terms=terms))
        self.publish(db)

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
        """Whether the committed index reflects meta.sqlite's generation, read through `db`."""
        return self.searcher()[1] == _generation(db)


_ALL_ROWS = "SELECT c.doc_id, c.chunk_id, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.chunk_id"
_ROWS = "SELECT c.chunk_id, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid = c.chunk_id"


def _generation(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])


def fts5_search(db: sqlite3.Connection, query: str, limit: int,
                    doc_ids: list[str] | None) -> list[tuple[int, float]]:
    """(chunk_id, bm25) best first through one connection, by FTS5 (the default engine). FTS5's bm25() is negative."""
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
