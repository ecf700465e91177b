"""The dense (vector) index: FAISS building, reading, writing and searching, with no knowledge of SQLite.

kb/stores/local/index.py decides when an index is built or trusted; this module only does the FAISS work. An index
is exact flat inner-product search up to a size threshold and HNSW (approximate) above it, wrapped in an
id map so its ids are the SQLite chunk ids. Vectors are L2-normalised, so inner product is cosine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.errors import IndexFormatError
from kb.stores.centring import Centering


@dataclass(frozen=True)
class DenseIndex:
    """A FAISS index of centred chunk vectors and the centring that made them (see kb.stores.centring)."""

    faiss: Any
    centering: Centering

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    def search(self, query_vector: np.ndarray, limit: int, chunk_ids: np.ndarray | None = None,
               lang: str = "en") -> list[tuple[int, float]]:
        """(chunk_id, cosine similarity in the centred space) best first; `lang` is the question's."""
        return search(self.faiss, self.centering.query(query_vector, lang), limit, chunk_ids)


def build_index(ids: np.ndarray, vectors: np.ndarray, hnsw: bool):
    """An index of float32 vectors under the given chunk ids."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building uses every core; searching sets 1
    dim = vectors.shape[1]
    if hnsw:
        inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = 80
        inner.hnsw.efSearch = 128
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def vectors_from_rows(rows: Iterable[tuple[int, bytes]], dim: int, source: Path,
                      count: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 vectors [n, dim]) from `count` (chunk_id, vector blob) rows, read one at a time into arrays
    allocated once (a million chunks take their 1.5 GB of vectors, not twice that); `source` names the database
    in errors."""
    ids = np.zeros(count, dtype=np.int64)
    vectors = np.zeros((count, dim), dtype=np.float32)
    n = 0
    for chunk_id, blob in rows:
        if len(blob) != dim * 4:
            raise IndexFormatError(f"{source} holds a {len(blob) // 4}-dim vector; the manifest says {dim}. "
                                   "Rebuild the KB with `kb ingest --rebuild`.")
        if n == count:
            raise IndexFormatError(f"{source} changed while its vectors were read; run the command again")
        ids[n] = chunk_id
        vectors[n] = np.frombuffer(blob, dtype=np.float32)
        n += 1
    return ids[:n], vectors[:n]


def read_index(data: bytes, path: Path):
    """An index from bytes kb wrote (the caller checks their digest first: FAISS trusts sizes in the file)."""
    import faiss

    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({e}); delete it and "
                               "kb rebuilds it from meta.sqlite") from e


def write_index(index, path: Path) -> bytes:
    """Write the index to `path` atomically (temp file, fsync, rename); returns the bytes written."""
    import faiss

    tmp = path.with_name(path.name + ".tmp")
    try:
        data = faiss.serialize_index(index).tobytes()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return data


def search(index, query_vector: np.ndarray, limit: int, chunk_ids: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(chunk_id, cosine similarity) best first, optionally only among `chunk_ids`."""
    import faiss

    if index.ntotal == 0 or (chunk_ids is not None and len(chunk_ids) == 0):
        return []
    params = None if chunk_ids is None else faiss.SearchParameters(sel=faiss.IDSelectorBatch(chunk_ids))
    # One query is a matrix-vector product: more threads only add OpenMP overhead (5x slower on 2 busy cores).
    faiss.omp_set_num_threads(1)
    query = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
    scores, ids = index.search(query, min(limit, index.ntotal), params=params)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]
