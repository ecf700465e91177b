"""The local store's keyword engines: the tantivy index (store.keyword_engine: tantivy, the default), BM25 that
does not score every match, and SQLite FTS5 (store.keyword_engine: fts5).

FTS5's bm25() scores every chunk that holds a query term, so its time grows with the corpus; tantivy (Rust,
block-max WAND) skips the postings that cannot reach the top k. The index lives in the KB's folder
(`keywords.tantivy/`) and is derived data, as the FAISS file is: meta.sqlite stays the truth. A KB of one engine
keeps one index: with tantivy the FTS5 table is empty (meta FTS5_OFF; it took 1.2 KB a chunk, more than the
chunk's text), and the terms a rebuild or an export needs are computed again from the chunks' text
(`chunk_terms`: the same function ingest applied). A KB built with fts5 is upgraded on its next tantivy ingest
(its FTS5 terms feed the build, then the table is emptied), and one built with tantivy gets its FTS5 table
filled again on its next fts5 ingest (`restore_fts5`).

Terms are kb.text.keywords's (jieba words for Chinese, whole words otherwise); tantivy's `simple` tokenizer
splits them at punctuation as FTS5's unicode61 does, then folds accents and stems English (Snowball's English,
where FTS5 has Porter's first stemmer). Fields: the terms (frequencies, no positions), doc_id (raw, for the
document filter and deletions) and chunk_id (a fast column).

The generation tag: one extra document (doc_id GENERATION_KEY, chunk_id = the SQLite generation it reflects) is
replaced in every tantivy commit, so the tag and the index change atomically. A searcher whose tag differs
from meta.sqlite's generation is behind: a crash between the SQLite commit and tantivy's, an ingest that has not
published yet (it publishes every PUBLISH_SECONDS and at its end), writes made with the fts5 engine. Searches
then go to FTS5 where the KB still keeps it, else to the index as it stands with the documents changed since
(meta.sqlite's keyword_pending, filled by each transaction) left out: those are found by dense search until the
next commit. The next writer brings the index up to date (`sync`: the pending documents, or every row, reporting
its progress). Nothing is written by a reader: the index is created by the writer only, and a folder a reader
cannot write (tantivy takes a lock file even to read) is searched through a private copy of the index in the
temporary folder. Leaves out: when to sync and publish (store.py: before a writer's first change, and in
finish()).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kb.errors import StorageError
from kb.text.keywords import fts_query, index_text, query_terms
from kb.types import embedding_text

FOLDER = "keywords.tantivy"
FORMAT = 1  # a change of schema or tokenizer: an index of another format is rebuilt from meta.sqlite
GENERATION_KEY = f"\x00kb-keywords-v{FORMAT}"
TOKENIZER = "kb_terms"
WRITER_HEAP = 128_000_000
PENDING_SINCE = "keyword_pending_since"  # meta key: keyword_pending holds every document changed since this generation
FTS5_OFF = "fts5_off"  # meta key: chunks_fts is not kept (a KB written with tantivy): it is empty
PROGRESS_EVERY = 20_000  # chunks between two progress reports of a full build (about 0.5 s at 1M chunks)
PUBLISH_SECONDS = 30.0  # a long ingest commits the keyword index this often: what it wrote becomes searchable


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
        self._copy: Path | None = None  # the private copy a reader of a read-only folder searches
        self._copied_at: float | None = None  # the folder's meta.json mtime when copied
        self._index = self._open()  # None until the writer creates it, or where it cannot be opened
        self._writer = None
        self.dirty = False  # changes not yet committed
        self.published_at = time.monotonic()

    def _open(self):
        """The committed index, if the folder holds one, else None. Never writes a new folder. tantivy takes a lock
        file even to read: a folder this process cannot write is searched through a copy in the temporary folder."""
        try:
            if not self.path.is_dir() or not self._tv.Index.exists(str(self.path)):
                return None
            where = self.path if os.access(self.path, os.W_OK) else self._copied()
            index = self._tv.Index(self.schema, path=str(where), reuse=True)
        except (OSError, ValueError):  # another format, a damaged folder: the writer rebuilds it
            return None
        index.register_tokenizer(TOKENIZER, self.analyzer)
        return index

    def _copied(self) -> Path:
        """A private copy of a read-only folder's committed index (the files its meta.json names), removed when
        this object goes or the process exits."""
        if self._copy is None:
            self._copy = Path(tempfile.mkdtemp(prefix="kb-keywords-"))
            weakref.finalize(self, shutil.rmtree, self._copy, True)
        for old in self._copy.iterdir():
            old.unlink()
        self._copied_at = (self.path / "meta.json").stat().st_mtime
        for path in self.path.iterdir():
            if path.is_file() and not path.name.endswith(".lock"):
                shutil.copyfile(path, self._copy / path.name)
        return self._copy

    def _refreshed(self) -> bool:
        """A reader's copy reopened when the folder's index has committed since it was taken."""
        if self._copy is None or self._copied_at is None:
            return False
        try:
            if (self.path / "meta.json").stat().st_mtime == self._copied_at:
                return False
        except OSError:
            return False
        self._index = self._open()
        return True

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

    def search_db(self, db: sqlite3.Connection, query: str, limit: int,
                  doc_ids: list[str] | None) -> list[tuple[int, float]]:
        """(chunk_id, score) best first for the KB as `db` reads it: the index when its last commit reflects that
        generation; else FTS5 where the KB keeps it; else the index with the documents changed since its commit
        left out (none at all before its first commit: dense search alone finds them)."""
        searcher, tagged = self.searcher()
        gen = _generation(db)
        if tagged != gen and self._refreshed():
            searcher, tagged = self.searcher()
        if tagged == gen:
            return self.search(searcher, query, limit, doc_ids)
        if fts5_kept(db):
            return fts5_search(db, query, limit, doc_ids)
        since = db.execute("SELECT value FROM meta WHERE key=?", (PENDING_SINCE,)).fetchone()
        if searcher is None or tagged is None or since is None or int(since[0]) > tagged:
            return []
        changed = [r[0] for r in db.execute("SELECT doc_id FROM keyword_pending")]
        return self.search(searcher, query, limit, doc_ids, leave_out=changed)

    def search(self, searcher, query: str, limit: int, doc_ids: list[str] | None,
               leave_out: list[str] | None = None) -> list[tuple[int, float]]:
        """(chunk_id, bm25 >= 0) best first: any of the query's terms, only in doc_ids when given, never in
        leave_out's documents."""
        tv = self._tv
        tokens = dict.fromkeys(tok for t in query_terms(query) for tok in self.analyzer.analyze(t))
        if not tokens or doc_ids == []:
            return []
        q = tv.Query.boolean_query([(tv.Occur.Should, tv.Query.term_query(self.schema, "terms", t)) for t in tokens])
        if doc_ids is not None or leave_out:  # inside the engine: intersected with the documents' postings
            parts = [(tv.Occur.Must, q)]
            if doc_ids is not None:
                parts.append((tv.Occur.Must, tv.Query.const_score_query(
                    tv.Query.term_set_query(self.schema, "doc_id", list(doc_ids)), 0.0)))
            if leave_out:
                parts.append((tv.Occur.MustNot, tv.Query.term_set_query(self.schema, "doc_id", list(leave_out))))
            q = tv.Query.boolean_query(parts)
        hits = searcher.search(q, limit, count=False).hits
        ids = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        return [(int(i), float(score)) for i, (score, _) in zip(ids, hits)]

    def document_frequency(self, terms: list[str]) -> dict[str, int] | None:
        """How many chunks of the last commit hold each kb term (its rarest token where punctuation splits it;
        deleted chunks count until a merge drops them); None before the first commit."""
        searcher, tagged = self.searcher()
        if searcher is None or tagged is None:
            return None
        out = {}
        for t in dict.fromkeys(terms):
            tokens = self.analyzer.analyze(t)
            if tokens:
                out[t] = min(searcher.doc_freq("terms", tok) for tok in tokens)
        return out

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
        self.published_at = time.monotonic()
        self._index.reload()

    def due(self) -> bool:
        """Whether a long write session should publish now (PUBLISH_SECONDS since its last commit)."""
        return self.dirty and time.monotonic() - self.published_at >= PUBLISH_SECONDS

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
        mount that is to be unmounted, a folder to be removed on Windows), and of a reader's copy."""
        self.close()
        self._index = None
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = self._copied_at = None

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
                self.replace(doc_id, [(cid, terms) for _, cid, terms in chunk_terms(db, doc_id)])
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
        for doc_id, chunk_id, terms in chunk_terms(db):
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
        with _immediate(db):
            db.execute("DELETE FROM keyword_pending")
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PENDING_SINCE, str(gen)))

    def current(self, db: sqlite3.Connection) -> bool:
        """Whether the committed index reflects meta.sqlite's generation, read through `db` (False: no index)."""
        return self.searcher()[1] == _generation(db)


def fts5_kept(db: sqlite3.Connection) -> bool:
    """Whether chunks_fts holds every chunk's terms (a KB written with fts5, or not yet upgraded to tantivy)."""
    return db.execute("SELECT 1 FROM meta WHERE key=?", (FTS5_OFF,)).fetchone() is None


def chunk_terms(db: sqlite3.Connection, doc_id: str | None = None) -> Iterator[tuple[str, int, str]]:
    """(doc_id, chunk_id, terms) of one document's chunks in order, or of every chunk: FTS5's stored terms where
    the KB keeps them, else computed again from the chunk's text under its heading (ingest's own function)."""
    where = " WHERE c.doc_id=? ORDER BY c.ordinal" if doc_id is not None else ""
    args = (doc_id,) if doc_id is not None else ()
    if fts5_kept(db):
        yield from db.execute("SELECT c.doc_id, c.chunk_id, f.terms FROM chunks c JOIN chunks_fts f "
                              "ON f.rowid = c.chunk_id" + where, args)
        return
    rows = db.execute("SELECT c.doc_id, c.chunk_id, c.section, d.title, c.text FROM chunks c JOIN documents d "
                      "USING (doc_id)" + where, args)
    for doc, chunk_id, section, title, text in rows:
        yield doc, chunk_id, index_text(embedding_text(section, title, text))


def retire_fts5(db: sqlite3.Connection) -> None:
    """Empty the FTS5 table of a KB whose tantivy index is current (dropped and made again: deleting a million
    rows one by one would take minutes), and record that it is not kept. One transaction."""
    if not fts5_kept(db):
        return
    from kb.stores.local.schema import FTS5_TABLE

    with _immediate(db):
        db.execute("DROP TABLE chunks_fts")
        db.execute(FTS5_TABLE)
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (FTS5_OFF,))


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def restore_fts5(db: sqlite3.Connection, progress: Callable[[int, int], None] | None = None) -> None:
    """Fill the FTS5 table of a KB written with tantivy again (store.keyword_engine switched to fts5), from the
    chunks' text, in one transaction, telling `progress` (chunks done, chunks in all)."""
    if fts5_kept(db):
        return
    tell = progress or (lambda done, total: None)
    total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    tell(0, total)
    done = 0
    with _immediate(db):
        for done, (_, chunk_id, terms) in enumerate(chunk_terms(db), 1):
            db.execute("INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)", (chunk_id, terms))
            if done % PROGRESS_EVERY == 0:
                tell(done, total)
        db.execute("DELETE FROM meta WHERE key=?", (FTS5_OFF,))
    if done % PROGRESS_EVERY or not done:
        tell(done, total)


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
    index, a first build that was killed). Unless current, searches use FTS5 where the KB keeps it (fts5_kept),
    else leave the changed documents (or every one, when missing) to dense search; the next ingest brings the
    index up to date."""
    tagged = TantivyKeywords(folder).searcher()[1]
    return "missing" if tagged is None else "current" if tagged == _generation(db) else "behind"
