"""The local store's dense index: a FAISS file per commit generation, derived from the vectors in SQLite.

`LocalDenseIndex` is the part of LocalStore (store.py) that keeps vectors-<gen>.faiss and the centring it
was built with: read the file only when its digest is the one kb recorded in meta.sqlite for the current
generation, else rebuild it from SQLite (a crash between the commit and the file write, a damaged or foreign
file); write it atomically at the end of a write session. The language prior lives here too, since the
centring is fitted with it. FAISS itself (reading, writing, building, searching) is kb/stores/dense.py's;
`saved_index_state` gives `kb doctor` the same verdict on a file without opening the store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from kb.errors import StorageError
from kb.stores import dense
from kb.stores import manifest as manifests
from kb.stores.base import DenseQuery, prior_from_json, prior_to_json
from kb.stores.centring import Centering
from kb.stores.centring import fit as fit_centering
from kb.stores.local.schema import CENTERING, FAISS_DIGEST, PRIOR, digest
from kb.text.lang import language


class LocalDenseIndex:
    """The FAISS file, its centring and the language prior of one KB folder (a base of LocalStore, which sets the
    attributes below and provides generation, chunk_count and chunk_ids_of)."""

    folder: Path
    dim: int
    hnsw_threshold: int
    db_path: Path
    _db: sqlite3.Connection
    _index: tuple[int, dense.DenseIndex] | None
    ensemble_dims: dict[str, int]
    _ensemble_indexes: dict[str, tuple[int, dense.DenseIndex]]
    generation: int

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

    def ensemble_index(self, model: str) -> dense.DenseIndex:
        """The dense index of another embedder of the KB's ensemble, for the current generation: built in memory
        from ensemble_vectors (flat, exact; centred on its own language means) when first searched after a
        write. Not saved: at 100k chunks the build takes about a second."""
        if model not in self.ensemble_dims:
            raise StorageError(f"{self.folder} holds no vectors of embedding model '{model}'")
        self._db.execute("BEGIN")
        try:
            gen = self.generation
            cached = self._ensemble_indexes.get(model)
            if cached is not None and cached[0] == gen:
                return cached[1]
            count = self._db.execute("SELECT COUNT(*) FROM ensemble_vectors WHERE model=?", (model,)).fetchone()[0]
            langs: list[str] = []

            def rows():
                for chunk_id, blob, text in self._db.execute(
                        "SELECT e.chunk_id, e.vector, c.text FROM ensemble_vectors e JOIN chunks c USING (chunk_id) "
                        "WHERE e.model=?", (model,)):
                    langs.append(language(text))
                    yield chunk_id, blob

            ids, vectors = dense.vectors_from_rows(rows(), self.ensemble_dims[model], self.db_path, count)
        finally:
            self._db.execute("COMMIT")
        centering = fit_centering(vectors, langs)
        built = dense.DenseIndex(dense.build_index(ids, centering.vectors(vectors, langs), hnsw=False), centering)
        self._ensemble_indexes[model] = (gen, built)
        return built

    def language_prior(self) -> dict[str, np.ndarray] | None:
        """The embedder's per-language mean vectors over generic text, if recorded (kb.stores.centring)."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (PRIOR,)).fetchone()
        if row is None:
            return None
        try:
            return prior_from_json(row[0])
        except (ValueError, TypeError, AttributeError):
            return None

    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None:
        """Record the language prior (once per KB: it depends only on the embedder)."""
        data = prior_to_json(prior)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PRIOR, data))
        self._db.execute("DELETE FROM meta WHERE key=?", (CENTERING,))  # refit with the prior
        self._db.execute("COMMIT")
        self._index = None

    def _recorded_centering(self, gen: int) -> Centering | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (CENTERING,)).fetchone()
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
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (FAISS_DIGEST,)).fetchone()
        if row is None or not row[0].startswith(f"{gen}:"):
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data if row[0] == f"{gen}:{digest(data)}" else None

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
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (FAISS_DIGEST, f"{gen}:{digest(data)}"))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 (CENTERING, f"{gen}:{index.centering.to_json()}"))
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
        """Nothing to do: the local store fits its centring from all vectors whenever it builds the index."""

    def finished(self) -> bool:
        return self.dense_index_saved()

    def finish(self) -> None:
        self.save_dense_index()


def saved_index_state(db: sqlite3.Connection, folder: Path) -> tuple[str, Path, bytes | None]:
    """How the current generation's FAISS file stands, read through any connection (a read-only one will do):
    (state, path, trusted bytes). state is 'saved' (kb wrote exactly these bytes, with their centring),
    'missing' (no file, or none recorded for this generation: a crash before the write, or never saved) or
    'damaged' (the bytes are not the ones kb wrote). Readers rebuild the index from meta.sqlite unless 'saved';
    the same rule as Store.dense_index, for `kb doctor`."""
    gen = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
    path = folder / f"vectors-{gen}.faiss"
    recorded = db.execute("SELECT value FROM meta WHERE key=?", (FAISS_DIGEST,)).fetchone()
    centering = db.execute("SELECT value FROM meta WHERE key=?", (CENTERING,)).fetchone()
    if recorded is None or not recorded[0].startswith(f"{gen}:") or not path.is_file():
        return "missing", path, None
    if centering is None or not centering[0].startswith(f"{gen}:"):
        return "missing", path, None
    data = path.read_bytes()
    return ("saved", path, data) if recorded[0] == f"{gen}:{digest(data)}" else ("damaged", path, None)
