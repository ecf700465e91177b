"""The local store's dense indexes: FAISS files derived from the vectors in SQLite, kept up to date in place.

`LocalDenseIndex` is the part of LocalStore (store.py) that keeps one dense index per embedder of the KB: the
main one (chunks.vector, in vectors-<gen>.faiss) and each other member of an ensemble (ensemble_vectors, in
ensemble-<model hash>-<gen>.faiss), each with the centring it was built with. How an index follows the KB:
- **Updated, not rebuilt.** After a commit, the index in memory (or the saved file, read only when its digest is
  the one kb recorded in meta.sqlite) is brought to the current generation: the chunk ids SQLite holds are
  compared with the index's (a chunk id is a hash of its document, place and text, so a shared id is the same
  vector), new chunks are centred and added, removed ones deleted (flat) or tombstoned (HNSW). Adding 1,000
  chunks to a million reads their vectors and a million ids, not a million vectors.
- **Rebuilt** (streamed from SQLite in batches: one copy of the vectors, the index's own) when there is no
  trusted file, when the kind changes (flat past retrieval.hnsw_threshold becomes HNSW; HNSW under 80% of it
  becomes flat again), when tombstones pass TOMBSTONE_SHARE of the index, or when the centring has drifted:
  each language's mean, kept exactly by every transaction in meta.sqlite's language_sums table, has moved more
  than CENTRING_DRIFT from the means the index was centred with. Each rebuild's reason is recorded in meta
  (DENSE_LOG, the last 20) when the index is saved.
- **Saved** atomically at the end of a write session (finish), with its digest and centring under the current
  generation; in a KB past SAVE_ALWAYS_BELOW chunks only once SAVE_AFTER chunks changed since the saved file
  (rewriting a million-chunk index, 1 GB, takes longer than adding 1,000 chunks to it): until then finish records
  that the saved file is *behind* on purpose (DEFERRED), and a reader brings it up to date on open.
The language prior lives here too, since the main centring is fitted with it. FAISS itself is kb/stores/dense.py's;
`saved_index_state` gives `kb doctor` the same verdict on the main file without opening the store.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kb.errors import StorageError
from kb.stores import dense
from kb.stores import manifest as manifests
from kb.stores.base import DenseQuery, batches, prior_from_json, prior_to_json
from kb.stores.centring import Centering, distance, fit_sums
from kb.stores.local.schema import (
    CENTERING,
    DEFERRED,
    DENSE_LOG,
    FAISS_DIGEST,
    PRIOR,
    SUMS_KEPT,
    blob_vectors,
)
from kb.text.lang import LANGUAGES, language

TOMBSTONE_SHARE = 0.2  # an HNSW index with more removed chunks than this share of its nodes is rebuilt
CENTRING_DRIFT = 0.02  # a language mean that moved further than this (L2; the means' norms are about 0.3-0.9)
FLAT_AGAIN = 0.8  # an HNSW index becomes flat again under this share of retrieval.hnsw_threshold
BATCH = 32_768  # vectors read from SQLite at a time when building
SAVE_AFTER = 2_000  # an index of more than SAVE_ALWAYS_BELOW chunks is saved once this many chunks changed since
SAVE_ALWAYS_BELOW = 100_000  # its saved file (until then a reader adds them on open: about a second at most)

MAIN = ""  # the model name of the KB's main embedder's index


@dataclass
class DenseSource:
    """One embedder's dense index of a KB: where its vectors are, its file, and what this process holds of it."""

    model: str  # MAIN, or another member of the ensemble
    dim: int
    index: tuple[int, dense.DenseIndex] | None = None  # (generation, index) in memory
    saved_generation: int | None = None  # the generation of its file on disk, once read or written
    changed_since_save: int = 0  # chunks added or removed in the index since that file
    rebuilt: list[dict] = field(default_factory=list)  # full builds not yet recorded in DENSE_LOG

    def key(self, base: str) -> str:
        """A meta key of this index (the main one's are the plain keys kb has always used)."""
        return base if self.model == MAIN else f"{base}:{self.model}"

    def file(self, folder: Path, gen: int | str) -> Path:
        return folder / f"{self.prefix}{gen}.faiss"

    @property
    def prefix(self) -> str:
        if self.model == MAIN:
            return "vectors-"
        return f"ensemble-{hashlib.blake2b(self.model.encode(), digest_size=6).hexdigest()}-"

    # the SQL of its vectors: (chunk_id, vector, text) rows; `?` first binds the model for an ensemble member
    def ids_sql(self) -> tuple[str, tuple]:
        if self.model == MAIN:
            return "SELECT chunk_id FROM chunks", ()
        return "SELECT chunk_id FROM ensemble_vectors WHERE model=?", (self.model,)

    def rows_sql(self, where: str = "") -> tuple[str, tuple]:
        if self.model == MAIN:
            return "SELECT chunk_id, vector, text FROM chunks" + (f" WHERE {where}" if where else ""), ()
        return ("SELECT e.chunk_id, e.vector, c.text FROM ensemble_vectors e JOIN chunks c USING (chunk_id) "
                "WHERE e.model=?" + (f" AND e.{where}" if where else "")), (self.model,)


class LocalDenseIndex:
    """The FAISS files, their centrings and the language prior of one KB folder (a base of LocalStore, which sets
    the attributes below and provides generation and chunk_ids_of)."""

    folder: Path
    dim: int
    hnsw_threshold: int
    db_path: Path
    _db: sqlite3.Connection
    ensemble_dims: dict[str, int]
    _sources: dict[str, DenseSource]
    generation: int

    def _init_dense(self) -> None:
        self._sources = {MAIN: DenseSource(MAIN, self.dim),
                         **{m: DenseSource(m, d) for m, d in self.ensemble_dims.items()}}

    def dense_index(self) -> dense.DenseIndex:
        """The main embedder's dense index for the current generation."""
        return self._dense(self._sources[MAIN])

    def ensemble_index(self, model: str) -> dense.DenseIndex:
        """The dense index of another embedder of the KB's ensemble, for the current generation."""
        if model not in self.ensemble_dims:
            raise StorageError(f"{self.folder} holds no vectors of embedding model '{model}'")
        return self._dense(self._sources[model])

    def _dense(self, source: DenseSource) -> dense.DenseIndex:
        """An index for the current generation: cached or read from file, and brought up to date; else built."""
        self._db.execute("BEGIN")  # one read snapshot for the generation, the ids and the vectors
        try:
            gen = self.generation
            if source.index is not None and source.index[0] == gen:
                return source.index[1]
            index = source.index[1] if source.index is not None else self._saved_index(source)
            reason = "no saved index" if index is None else self._update(source, index)
            if reason:
                index = self._build(source, reason)
        finally:
            self._db.execute("COMMIT")
        source.index = (gen, index)
        return index

    # -- reading the file -------------------------------------------------------------------------------------
    def _saved_index(self, source: DenseSource) -> dense.DenseIndex | None:
        """The saved index (of this or an older generation) if its bytes and centring are the ones kb recorded."""
        recorded = self._meta(source.key(FAISS_DIGEST))
        centring = self._meta(source.key(CENTERING))
        if recorded is None or centring is None or ":" not in recorded:
            return None
        saved_gen, digest = recorded.split(":", 1)
        if not centring.startswith(f"{saved_gen}:"):
            return None
        try:
            centering = Centering.from_json(centring.split(":", 1)[1])
        except (ValueError, TypeError, AttributeError):
            return None
        raw = dense.read_index(source.file(self.folder, saved_gen), digest)
        if raw is None or raw.d != source.dim:
            return None
        source.saved_generation = int(saved_gen)
        source.changed_since_save = 0
        return dense.DenseIndex(raw, centering)

    # -- updating ---------------------------------------------------------------------------------------------
    def _update(self, source: DenseSource, index: dense.DenseIndex) -> str | None:
        """Bring `index` to the vectors SQLite holds now; returns why it must be rebuilt instead, or None."""
        sql, args = source.ids_sql()
        live = np.fromiter((r[0] for r in self._db.execute(sql, args)), dtype=np.int64)
        held = index.ids()
        if index.tombstones:
            held = np.setdiff1d(held, np.fromiter(index.tombstones, dtype=np.int64))
        added = np.setdiff1d(live, held)
        removed = np.setdiff1d(held, live)
        if index.hnsw and len(live) < FLAT_AGAIN * self.hnsw_threshold:
            return f"{len(live)} chunks: back under {FLAT_AGAIN:.0%} of retrieval.hnsw_threshold, flat again"
        if not index.hnsw and len(live) > self.hnsw_threshold:
            return f"{len(live)} chunks: past retrieval.hnsw_threshold ({self.hnsw_threshold}), HNSW"
        if index.hnsw and len(index.tombstones) + len(removed) > TOMBSTONE_SHARE * (index.ntotal + len(added)):
            return (f"{len(index.tombstones) + len(removed)} removed chunks still in the graph "
                    f"(over {TOMBSTONE_SHARE:.0%})")
        if len(added) or len(removed):
            now = self._centring_now(source)
            if now is None:
                return "language sums not kept yet (a KB from before they were): refit the centring"
            drift = distance(now, index.centering)
            if drift > CENTRING_DRIFT:
                return f"centring refitted: the language means moved {drift:.3f} (over {CENTRING_DRIFT})"
        source.changed_since_save += len(added) + len(removed)
        index.remove(removed)
        for part in batches(added.tolist(), 500):
            sql, args = source.rows_sql(f"chunk_id IN ({','.join('?' * len(part))})")
            ids, vectors, langs = self._rows_to_arrays(self._db.execute(sql, (*args, *part)).fetchall(), source.dim)
            index.add(ids, index.centering.vectors(vectors, langs))
        return None

    def _centring_now(self, source: DenseSource) -> Centering | None:
        """The centring of the index's vectors as they are now, from the language sums (None: not kept)."""
        sums = self.language_sums(source.model)
        if sums is None:
            return None
        return fit_sums(*sums, self.language_prior() if source.model == MAIN else None)

    def _rows_to_arrays(self, rows, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(ids, float32 vectors, languages) of (chunk_id, vector blob, text) rows."""
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = blob_vectors([r[1] for r in rows], dim or self.dim, self.db_path)
        return ids, vectors, [language(r[2]) for r in rows]

    # -- building ---------------------------------------------------------------------------------------------
    def _build(self, source: DenseSource, reason: str) -> dense.DenseIndex:
        """A new index of every vector, streamed from SQLite (BATCH at a time), with a fresh centring."""
        centering = self._centring_now(source)
        if centering is None:  # sums not kept (an older KB): one pass to fit the centring, then one to add
            sums, counts = _empty_sums(source.dim)
            for _, vectors, langs in self._all_vectors(source):
                add_to_sums(sums, counts, vectors, langs)
            centering = fit_sums(sums, counts, self.language_prior() if source.model == MAIN else None)
        sql, args = source.ids_sql()
        count = self._db.execute(f"SELECT COUNT(*) FROM ({sql})", args).fetchone()[0]
        index = dense.DenseIndex(dense.new_index(source.dim, count > self.hnsw_threshold), centering)
        for ids, vectors, langs in self._all_vectors(source):
            index.add(ids, centering.vectors(vectors, langs))
        if index.ntotal != count:
            raise StorageError(f"{self.db_path} changed while its vectors were read; run the command again")
        source.rebuilt.append({"generation": self.generation, "model": source.model or "main", "chunks": count,
                               "reason": reason, "kind": "hnsw" if index.hnsw else "flat", "at": round(time.time())})
        return index

    def _all_vectors(self, source: DenseSource) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        sql, args = source.rows_sql()
        cursor = self._db.execute(sql, args)
        while rows := cursor.fetchmany(BATCH):
            yield self._rows_to_arrays(rows, source.dim)

    # -- the language sums ------------------------------------------------------------------------------------
    def language_sums(self, model: str = MAIN) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
        """Each language's float64 sum of an embedder's chunk vectors and its count, as of the last commit (None:
        not kept)."""
        if self._meta(SUMS_KEPT) is None:
            return None
        dim = self._sources[model].dim
        sums, counts = _empty_sums(dim)
        for lang, count, blob in self._db.execute("SELECT lang, count, sum FROM language_sums WHERE model=?",
                                                  (model,)):
            if lang in sums and len(blob) == dim * 8:
                sums[lang], counts[lang] = np.frombuffer(blob, dtype=np.float64).copy(), int(count)
        return sums, counts

    def _keep_sums(self, db: sqlite3.Connection, model: str, vectors: np.ndarray, langs: list[str],
                   sign: int) -> None:
        """Add (sign 1) or take away (-1) chunks' vectors in language_sums, inside the caller's transaction."""
        if not len(langs) or self._meta(SUMS_KEPT) is None:
            return
        dim = self._sources[model].dim
        sums, counts = _empty_sums(dim)
        add_to_sums(sums, counts, vectors, langs)
        for lang in LANGUAGES:
            if not counts[lang]:
                continue
            row = db.execute("SELECT count, sum FROM language_sums WHERE model=? AND lang=?", (model, lang)).fetchone()
            count, total = (row[0], np.frombuffer(row[1], dtype=np.float64)) if row else (0, np.zeros(dim))
            db.execute("INSERT OR REPLACE INTO language_sums VALUES (?,?,?,?)",
                       (model, lang, count + sign * counts[lang], (total + sign * sums[lang]).tobytes()))

    def _start_sums(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Before a writer's first change to a KB from before language_sums: sum every vector once, telling
        `progress` (vectors done, vectors in all; about 40 s per million)."""
        if self._meta(SUMS_KEPT) is not None:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            total = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] + \
                self._db.execute("SELECT COUNT(*) FROM ensemble_vectors").fetchone()[0]
            tell = progress if progress is not None and total > BATCH else (lambda done, total: None)
            done = 0
            tell(done, total)
            self._db.execute("DELETE FROM language_sums")
            for source in self._sources.values():
                sums, counts = _empty_sums(source.dim)
                for _, vectors, langs in self._all_vectors(source):
                    add_to_sums(sums, counts, vectors, langs)
                    done += len(langs)
                    tell(done, total)
                self._db.executemany("INSERT INTO language_sums VALUES (?,?,?,?)",
                                     [(source.model, lang, counts[lang], sums[lang].tobytes()) for lang in LANGUAGES])
            if done < total:
                tell(total, total)  # vectors of models the manifest no longer names
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (SUMS_KEPT,))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # -- the language prior -----------------------------------------------------------------------------------
    def language_prior(self) -> dict[str, np.ndarray] | None:
        """The embedder's per-language mean vectors over generic text, if recorded (kb.stores.centring)."""
        row = self._meta(PRIOR)
        if row is None:
            return None
        try:
            return prior_from_json(row)
        except (ValueError, TypeError, AttributeError):
            return None

    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None:
        """Record the language prior (once per KB: it depends only on the embedder)."""
        data = prior_to_json(prior)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PRIOR, data))
        self._db.execute("DELETE FROM meta WHERE key=?", (CENTERING,))  # refit with the prior
        self._db.execute("COMMIT")
        self._sources[MAIN] = DenseSource(MAIN, self.dim)

    # -- saving -----------------------------------------------------------------------------------------------
    def dense_index_saved(self) -> bool:
        """Whether the index file readers start from is the very bytes kb wrote, with its centring, and either of
        the current generation or behind it on purpose (else a reader rebuilds it, and the next ingest saves it);
        for the main index and every other embedder's."""
        return all(_saved_state(self._db, self.folder, s)[0] in ("saved", "behind") for s in self._sources.values())

    def save_dense_index(self) -> Path:
        """Save every index of the KB (see _save); returns the main one's file."""
        paths = {model: self._save(source) for model, source in self._sources.items()}
        return paths[MAIN]

    def _save(self, source: DenseSource) -> Path:
        """Write the FAISS file for the current generation (atomically), record why it was rebuilt if it was, and
        drop older files; or, for a large index with few changes since its saved file, record that the file is
        behind on purpose. Returns the file readers start from."""
        index = self._dense(source)
        gen = source.index[0]
        path = source.file(self.folder, gen)
        saved = source.file(self.folder, source.saved_generation)
        if source.saved_generation == gen and path.is_file():
            return path
        if (not source.rebuilt and source.saved_generation is not None and saved.is_file()
                and index.ntotal > SAVE_ALWAYS_BELOW and source.changed_since_save <= SAVE_AFTER):
            self._write_meta({source.key(DEFERRED): str(gen)})
            return saved
        try:
            with index.lock:
                digest = dense.write_index(index.faiss, path)
            manifests.fsync_dir(self.folder)
            values = {source.key(FAISS_DIGEST): f"{gen}:{digest}",
                      source.key(CENTERING): f"{gen}:{index.centering.to_json()}"}
            if source.rebuilt:
                values[DENSE_LOG] = json.dumps((json.loads(self._meta(DENSE_LOG) or "[]") + source.rebuilt)[-20:])
            self._write_meta(values)
            source.rebuilt = []
            source.saved_generation = gen
            source.changed_since_save = 0
        except (RuntimeError, OSError, sqlite3.OperationalError) as e:
            raise StorageError(f"cannot write {path} ({str(e).splitlines()[-1]}); the documents are saved "
                               "in meta.sqlite and kb rebuilds this file from them, but free disk space and "
                               "run the command again") from e
        for old in self.folder.glob(f"{source.prefix}*.faiss*"):
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def _write_meta(self, values: dict[str, str]) -> None:
        """Derived-data keys in one transaction, and not self.transaction(): they do not bump the generation."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def dense_rebuilds(self) -> list[dict]:
        """The dense indexes' last full builds, saved with them: generation, model, chunks, reason, kind, time."""
        return json.loads(self._meta(DENSE_LOG) or "[]")

    def dense_query(self, doc_ids: list[str] | None = None, model: str | None = None) -> DenseQuery:
        """A dense search over the current generation that another thread may run: the index and the allowed
        chunk ids are read here, on the thread that owns the SQLite connection. `model`: one of the ensemble's
        other embedders instead of the main one."""
        index = self.dense_index() if model is None else self.ensemble_index(model)
        allowed = None if doc_ids is None else self.chunk_ids_of(doc_ids)
        return lambda vector, limit, lang: index.search(vector, limit, allowed, lang)

    def centering(self) -> Centering:
        return self.dense_index().centering

    def preset_centering(self, centering: Centering) -> None:
        """Nothing to do: the local store refits its centring from the language sums when they drift."""

    def finished(self) -> bool:
        return self.dense_index_saved()

    def finish(self) -> None:
        self.save_dense_index()


def _empty_sums(dim: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    return {lang: np.zeros(dim, dtype=np.float64) for lang in LANGUAGES}, dict.fromkeys(LANGUAGES, 0)


def add_to_sums(sums: dict[str, np.ndarray], counts: dict[str, int], vectors: np.ndarray, langs: list[str]) -> None:
    labels = np.asarray(langs)
    for lang in LANGUAGES:
        mask = labels == lang
        if mask.any():
            sums[lang] += vectors[mask].sum(axis=0, dtype=np.float64)
            counts[lang] += int(mask.sum())


def saved_index_state(db: sqlite3.Connection, folder: Path) -> tuple[str, Path, str | None]:
    """How the main FAISS file readers start from stands, read through any connection (a read-only one will do):
    (state, path, its digest). state is 'saved' (kb wrote exactly these bytes, with their centring, for the
    current generation), 'behind' (the same, for an earlier generation, and the last ingest left it so on purpose:
    a reader adds the few chunks changed since), 'missing' (no file, or none recorded for this generation: a
    crash before the write, or never saved) or 'damaged' (the bytes are not the ones kb wrote). A reader
    rebuilds the index from meta.sqlite unless 'saved' or 'behind'; the same rule as LocalDenseIndex._dense,
    for `kb doctor`."""
    return _saved_state(db, folder, DenseSource(MAIN, 0))


def _saved_state(db: sqlite3.Connection, folder: Path, source: DenseSource) -> tuple[str, Path, str | None]:
    def meta(key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key=?", (source.key(key),)).fetchone()
        return row[0] if row else None

    gen = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]
    recorded, centering, deferred = meta(FAISS_DIGEST), meta(CENTERING), meta(DEFERRED)
    saved_gen = recorded.split(":", 1)[0] if recorded else str(gen)
    path = source.file(folder, saved_gen)
    state = "saved" if saved_gen == str(gen) else "behind" if deferred == str(gen) else None
    if state is None or not path.is_file() or centering is None or not centering.startswith(f"{saved_gen}:"):
        return "missing", source.file(folder, gen), None
    digest = recorded.split(":", 1)[1]
    return (state, path, digest) if dense.file_digest(path) == digest else ("damaged", path, None)
