"""The dense (vector) index: FAISS building, updating, reading, writing and searching, with no knowledge of SQLite.

kb/stores/local/index.py decides when an index is built, updated or trusted; this module only does the FAISS
work. An index is exact flat inner-product search up to a size threshold and HNSW (approximate) above it,
wrapped in an id map so its ids are the SQLite chunk ids. Vectors are L2-normalised, so inner product is cosine.

An index is updated in place: new chunks are added (HNSW's graph takes them one by one), removed chunks are
deleted from a flat index and *tombstoned* in an HNSW one (FAISS's HNSW cannot delete: the node stays in the
graph and a selector keeps it out of results) until a rebuild drops them.

HNSW stores its vectors as float16 (FAISS's SQ fp16): half of float32's memory and disk, with the same recall.
Measured on e5 vectors at 102k chunks (the dev-set KB's chunks copied with noise), 170 dev-set questions, top 10
against exact search (one thread):

| storage, M=32, efConstruction 200 | efSearch 256 | 512 | 1024 | 2048 |
| --- | --- | --- | --- | --- |
| float32 | 0.947 | 0.976 | 0.991 (4.5 ms) | 1.000 |
| float16 | 0.947 | 0.976 | 0.991 (2.7 ms) | 0.999 |
| 8-bit (SQ8) | 0.934 | 0.963 | 0.977 (2.7 ms) | 0.984 |

The index kb built before (float32, efConstruction 80, efSearch 128) had 0.838.

Files are written and read through FAISS's callback I/O: no second copy of a gigabyte index in memory, and the
digest is computed on the bytes as they pass.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import IndexFormatError
from kb.stores.centring import Centering

HNSW_M = 32  # graph degree (64 links a node on the base layer)
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 1024  # candidates a search keeps; see the module doc for recall against exact search
HNSW_EF_SEARCH_LARGE = 2048  # the same past LARGE chunks, where 1024 kept recall@10 0.932 at 1M
LARGE = 500_000
EXACT_BELOW = 20_000  # a filtered HNSW search over fewer chunks than this is exact (the vectors are rescored)


class DenseIndex:
    """A FAISS index of centred chunk vectors, the centring that made them (see kb.stores.centring) and the
    tombstones of an HNSW index (chunk ids in the graph that the KB no longer holds).

    Searches and updates may come from different threads (a server searches while an upload is written): the
    lock serialises them, since FAISS does not allow a search during an add."""

    def __init__(self, faiss_index: Any, centering: Centering, tombstones: Iterable[int] = ()) -> None:
        self.faiss = faiss_index
        self.centering = centering
        self.tombstones = set(int(i) for i in tombstones)
        self.lock = threading.Lock()
        self.hnsw = is_hnsw(faiss_index)  # the index object is never replaced, so neither is its kind
        self._exclude = None  # the selector of the tombstones, made when first needed

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def ids(self) -> np.ndarray:
        """Every chunk id the index holds, tombstoned ones included."""
        import faiss

        return faiss.vector_to_array(self.faiss.id_map).astype(np.int64, copy=False)

    def add(self, ids: np.ndarray, centred: np.ndarray) -> None:
        """Add centred vectors under their chunk ids (a tombstoned id that comes back is revived, not added twice)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        revived = np.fromiter((i in self.tombstones for i in ids.tolist()), dtype=bool, count=len(ids))
        with self.lock:
            if revived.any():  # the same chunk id is the same text and vector (ingest/parse.py, chunk_id_for)
                self.tombstones.difference_update(ids[revived].tolist())
                self._exclude = None
            fresh = ~revived
            if fresh.any():
                _add(self.faiss, ids[fresh], centred[fresh])

    def remove(self, ids: np.ndarray) -> None:
        """Delete chunk ids from a flat index; tombstone them in an HNSW one."""
        import faiss

        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        with self.lock:
            if self.hnsw:
                self.tombstones.update(ids.tolist())
                self._exclude = None
            else:
                self.faiss.remove_ids(faiss.IDSelectorBatch(ids))

    def search(self, query_vector: np.ndarray, limit: int, chunk_ids: np.ndarray | None = None,
               lang: str = "en", ef: int | None = None) -> list[tuple[int, float]]:
        """(chunk_id, cosine similarity in the centred space) best first; `lang` is the question's; `chunk_ids`:
        only among these (live ids: the caller reads them from the KB); `ef`: HNSW's efSearch instead of
        ef_search(size)."""
        import faiss

        query = np.asarray(self.centering.query(query_vector, lang), dtype=np.float32).reshape(1, -1)
        with self.lock:
            if self.ntotal == 0 or (chunk_ids is not None and len(chunk_ids) == 0):
                return []
            # One query is a matrix-vector product: more threads only add OpenMP overhead (5x slower on 2 busy cores).
            faiss.omp_set_num_threads(1)
            if chunk_ids is not None and self.hnsw and len(chunk_ids) < EXACT_BELOW:
                return _exact_among(self.faiss, query[0], chunk_ids, limit)
            if chunk_ids is not None:
                selector = faiss.IDSelectorBatch(np.asarray(chunk_ids, dtype=np.int64))
            elif self.tombstones:
                if self._exclude is None:
                    batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64))
                    self._exclude = (faiss.IDSelectorNot(batch), batch)  # the Not does not own its batch
                selector = self._exclude[0]
            else:
                selector = None
            if self.hnsw:
                params = faiss.SearchParametersHNSW(efSearch=max(ef or ef_search(self.ntotal), limit))
                if selector is not None:
                    params.sel = selector
            else:
                params = None if selector is None else faiss.SearchParameters(sel=selector)
            scores, ids = self.faiss.search(query, min(limit, self.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]


def ef_search(ntotal: int) -> int:
    """HNSW's efSearch for an index of this many vectors: a larger graph needs more candidates for the same recall."""
    return HNSW_EF_SEARCH_LARGE if ntotal > LARGE else HNSW_EF_SEARCH


def is_hnsw(index) -> bool:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return isinstance(inner, faiss.IndexHNSW)


def new_index(dim: int, hnsw: bool):
    """An empty index: flat (exact) or HNSW with float16 storage."""
    import faiss

    if hnsw:
        inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)  # the Python wrapper keeps `inner` alive with it


def _add(index, ids: np.ndarray, vectors: np.ndarray) -> None:
    import faiss

    if not len(ids):
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # adding uses every core; a search sets 1
    index.add_with_ids(vectors, ids)


def _exact_among(index, query: np.ndarray, chunk_ids: np.ndarray, limit: int) -> list[tuple[int, float]]:
    """Exact scores of a few chunks (a document filter) from the vectors the index stores: a graph search with a
    selective filter wanders and can return fewer than `limit`."""
    wanted = np.asarray(chunk_ids, dtype=np.int64)
    vectors = index.reconstruct_batch(wanted)
    scores = vectors @ query
    top = np.argsort(-scores)[:limit]
    return [(int(wanted[i]), float(scores[i])) for i in top]


def file_digest(path: Path) -> str:
    """blake2b-128 of a file, read in blocks."""
    with open(path, "rb") as f:
        return _digest_of(f)


def _digest_of(f) -> str:
    h = hashlib.blake2b(digest_size=16)
    for block in iter(lambda: f.read(1 << 22), b""):
        h.update(block)
    return h.hexdigest()


def read_index(path: Path, expected_digest: str):
    """The index in `path` if its bytes have the digest kb recorded, else None. The bytes are hashed, then read
    by FAISS from the same open file (FAISS trusts sizes in the file: only bytes kb wrote may reach it)."""
    import faiss

    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        if _digest_of(f) != expected_digest:
            return None
        f.seek(0)
        try:
            return faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except RuntimeError as e:
            raise IndexFormatError(f"{path} is not a readable FAISS index ({e}); delete it and "
                                   "kb rebuilds it from meta.sqlite") from e


def write_index(index, path: Path) -> str:
    """Write the index to `path` atomically (temp file, fsync, rename), streamed; returns the digest of its bytes."""
    import faiss

    tmp = path.with_name(path.name + ".tmp")
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(tmp, "wb") as f:
            def write(data: bytes) -> None:
                h.update(data)
                f.write(data)

            faiss.write_index(index, faiss.PyCallbackIOWriter(write))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return h.hexdigest()
