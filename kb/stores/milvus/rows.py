"""The rows of one KB build in Milvus as the store reads them: `MilvusRows`, the base of MilvusStore.

It holds what every part of the store needs: the collections' names (the four of a build, and the side
collection of each other embedder of the KB's ensemble), the meta collection (the generation that counts
commits, pending records, the recorded centrings), the list of committed documents (a document's chunks
are live only in the version its document row names; the list is cached per generation), recovery from a
killed writer's pending records, and the way back from a stored vector to the embedder's (`_raw`, the
inverse of `centre`). Writing is writes.py's, centring upkeep centring.py's, the ensemble's vectors
sides.py's, reads and search store.py's; the collections themselves are schema.py's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from kb.errors import IndexFormatError
from kb.stores.centring import Centering
from kb.stores.milvus.client import load
from kb.stores.milvus.schema import BATCH, DOC_LIST, check_chunks, check_sides, literal, side_collection


class MilvusRows:
    """One build of one KB in Milvus: its collections, meta and committed documents."""

    def __init__(self, client, build: str, dim: int, where: str, prefix: str,
                 ensemble: dict[str, int] | None = None) -> None:
        self.client = client
        self.dim = dim
        self.where = where
        base = prefix + build
        self.chunks, self.docs, self.texts, self.meta = (f"{base}_{k}" for k in ("chunks", "docs", "texts", "meta"))
        self.side_dims = dict(ensemble or {})  # the other embedders' model -> dimension (manifest "ensemble")
        self.sides = {model: side_collection(base, model) for model in self.side_dims}  # model -> collection
        check_chunks(client, self.chunks, where)
        check_sides(client, self.docs, self.sides, where)
        for collection in (self.chunks, self.docs, self.texts, self.meta, *self.sides.values()):
            load(client, collection)
        self._docs: dict[str, dict[str, Any]] | None = None  # doc_id -> row (no sums), for the generation below
        self._docs_generation = -1
        self._checked_at = 0.0
        self._recovered = False
        self._last_version = 0
        self._centrings: dict[int, Centering] = {}
        self._side_centrings: dict[str, Centering] = {}  # meta key "side:<tag>:centring:<id>" -> centring

    def close(self) -> None:
        pass  # the client is shared by the process

    @property
    def _versioned(self) -> tuple[str, ...]:
        """The collections whose rows belong to one version of a document (doc_id, version): written before the
        document row's commit, deleted with the version."""
        return (self.chunks, self.texts, *self.sides.values())

    # -- meta: generation, pending records, centrings -------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self.client.query(self.meta, filter=f"key == {json.dumps(key)}", output_fields=["value"])
        return rows[0]["value"] if rows else None

    def _set_meta(self, items: dict[str, str]) -> None:
        if items:
            self.client.upsert(self.meta, [{"key": k, "value": v, "_v": [0.0, 0.0]} for k, v in items.items()])

    def _generation(self) -> int:
        value = self._meta("generation")
        return int(value) if value else 0

    def _bump(self, changed: dict[str, dict[str, Any] | None]) -> None:
        """Count a commit; this writer's own changes (doc_id -> new row, None: removed) update its document list
        in place instead of it being read again (the lease makes this process the only writer)."""
        generation = self._generation() + 1
        self._set_meta({"generation": str(generation)})
        if self._docs is not None and self._docs_generation == generation - 1:
            for doc_id, row in changed.items():
                if row is None:
                    self._docs.pop(doc_id, None)
                else:
                    self._docs[doc_id] = {k: v for k, v in row.items() if k in DOC_LIST}
            self._docs_generation = generation
        else:
            self._docs = None

    # -- the committed documents and their chunks ---------------------------------------------
    def _doc_rows(self) -> dict[str, dict[str, Any]]:
        """doc_id -> its committed row, re-read when another writer committed (checked at most once a second)."""
        now = time.monotonic()
        if self._docs is not None and now - self._checked_at < 1.0:
            return self._docs
        generation = self._generation()
        self._checked_at = now
        if self._docs is None or generation != self._docs_generation:
            self._docs = {r["doc_id"]: r for r in self._scan(self.docs, "", DOC_LIST)}
            self._docs_generation = generation
        return self._docs

    def _scan(self, collection: str, expr: str, fields: list[str], batch: int = BATCH) -> Iterator[dict[str, Any]]:
        it = self.client.query_iterator(collection, batch_size=batch, filter=expr, output_fields=fields)
        try:
            while True:
                rows = it.next()
                if not rows:
                    return
                yield from rows
        finally:
            it.close()

    def _live(self, row: dict[str, Any]) -> bool:
        doc = self._doc_rows().get(row["doc_id"])
        return doc is not None and doc["version"] == row["version"]

    def _chunk_rows(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return [r for r in self._scan(self.chunks, expr, fields) if self._live(r)]

    def chunk_count(self) -> int:
        return sum(r["chunks"] for r in self._doc_rows().values())

    # -- what a killed writer left, and the stored vectors' centrings ----------------------------
    def _recover(self) -> None:
        """Delete what a killed writer left: for each pending document, every version but its committed one."""
        if self._recovered:
            return
        self._recovered = True
        pending = self.client.query(self.meta, filter='key like "pending:%"', output_fields=["key"])
        if not pending:
            return
        self._docs = None
        docs = self._doc_rows()
        for row in pending:
            doc_id = row["key"].split(":")[1]
            keep = docs[doc_id]["version"] if doc_id in docs else -1
            expr = f"doc_id == {json.dumps(doc_id)} and version != {keep}"
            for collection in self._versioned:
                self.client.delete(collection, filter=expr)
        self.client.delete(self.meta, filter=f"key in {literal(r['key'] for r in pending)}")

    def _centring(self, cid: int) -> Centering:
        if cid not in self._centrings:
            value = self._meta(f"centring:{cid}")
            if value is None:
                raise IndexFormatError(f"{self.where}: centring {cid} is missing from {self.meta}; rebuild the KB "
                                       "with `kb ingest PATH --rebuild`")
            self._centrings[cid] = Centering.from_json(value)
        return self._centrings[cid]

    def _raw(self, rows: list[dict[str, Any]], centring: Callable[[int], Centering] | None = None) -> list[np.ndarray]:
        """The embedder's vectors back from stored rows: centred * norm + the row's centring mean (`centring`: id ->
        Centering, the main embedder's by default)."""
        centring = centring or self._centring
        out = []
        for r in rows:
            vec = np.asarray(r["vector"], dtype=np.float32) * np.float32(r["norm"])
            shift = centring(r["centring"]).shift(r["lang"]) if centring(r["centring"]).means else None
            out.append(vec if shift is None else vec + shift)
        return out


def centre(centring: Centering, raw: np.ndarray, langs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors in the centred space, the norm each had before normalising)."""
    if not len(raw):
        return raw, np.zeros(0, dtype=np.float32)
    if not centring.means:
        return raw.astype(np.float32), np.ones(len(raw), dtype=np.float32)  # unit already: raw = vector * 1
    moved = raw - np.stack([centring.shift(lang) for lang in langs]).astype(np.float32)
    norms = np.maximum(np.linalg.norm(moved, axis=1), 1e-12).astype(np.float32)
    return (moved / norms[:, None]).astype(np.float32), norms
