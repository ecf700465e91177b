"""Writing to the Milvus store: `MilvusWrites`, documents put, touched and removed without transactions.

Milvus has no transactions, so a document is written as a new *version* beside the old one: its chunks
and text parts first, then its document row, whose upsert is the commit point (readers only see chunks
whose version is the one their document row names), then the old version is deleted. A "pending:<doc>:
<version>" record in meta, written before and deleted after, lets the next writer delete whatever a killed
one left (MilvusRows._recover). The other embedders' vectors of a KB built with an ensemble go into their side
collections (sides.py) with the chunks, under the same version. Vectors are stored centred in the applied
centring (centring.py; each side model's own), which a growing KB refits before it writes. Reads and search are
store.py's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import numpy as np

from kb.errors import StorageError
from kb.stores.base import Record, batches
from kb.stores.centring import Centering
from kb.stores.milvus.client import first_line
from kb.stores.milvus.rows import centre
from kb.stores.milvus.schema import BATCH, DOC_FIELDS, DOC_LIST, TEXT_PART, bm25_text, cut, literal, pk
from kb.stores.milvus.sides import MilvusSides
from kb.text.lang import LANGUAGES, language


class MilvusWrites(MilvusSides):
    """put_documents, touch_document and remove_documents of kb/stores/base.py's Store (the caller holds the lease)."""

    def catch_up(self, progress: Callable[[str, int, int], None] | None = None) -> None:
        """Nothing to do: Milvus keeps its BM25 index itself, and the writes recover what a killed writer left."""

    def put_documents(self, records: list[Record]) -> int:
        """New versions of the documents: chunks and text parts, then each document row (its commit), then
        the old versions deleted. Returns chunks removed."""
        if not records:
            return 0
        self._check_sides(records)
        self._recover()
        self._refit_early()
        cid, centring = self._applied()
        side_centrings = {model: self._side_applied(model) for model in self.sides}
        # every document version is a number no other version of any document has: old ones are deleted by it
        first = max(time.time_ns(), self._last_version + 1)
        versions = {r.info.doc_id: first + i for i, r in enumerate(records)}
        self._last_version = first + len(records)
        found = {r["doc_id"]: r for r in self.client.query(self.docs, filter=f"doc_id in {literal(versions)}",
                                                           output_fields=DOC_LIST)}
        old = {d: found.get(d) for d in versions}
        pending = [f"pending:{d}:{v}" for d, v in versions.items()]
        self._set_meta(dict.fromkeys(pending, ""))
        chunk_rows, text_rows, doc_rows = [], [], []
        side_rows: dict[str, list[dict]] = {collection: [] for collection in self.sides.values()}
        for r in records:
            chunks, texts, doc, sides = self._version_rows(r, versions[r.info.doc_id], cid, centring, side_centrings)
            for collection, rows in sides.items():
                side_rows[collection].extend(rows)
            chunk_rows.extend(chunks)
            text_rows.extend(texts)
            doc_rows.append(doc)
        try:
            for part in batches(chunk_rows, BATCH):
                self.client.insert(self.chunks, part)
            for part in batches(text_rows, 64):
                self.client.insert(self.texts, part)
            for collection, rows in side_rows.items():
                for part in batches(rows, BATCH):
                    self.client.insert(collection, part)
            # a path re-used under another id (should not happen, but never list one file twice)
            paths = literal(r.info.path for r in records)
            stale = [row["doc_id"] for row in self.client.query(self.docs, filter=f"path in {paths}",
                                                                output_fields=["doc_id"]) if row["doc_id"] not in old]
            self.client.upsert(self.docs, doc_rows)  # the commit point of each document
            gone = [row["version"] for row in old.values() if row is not None]
            if gone:
                for collection in self._versioned:
                    self.client.delete(collection, filter=f"version in {literal(gone)}")
            if stale:
                self.remove_documents(stale)
            self.client.delete(self.meta, filter=f"key in {literal(pending)}")
            self._bump({row["doc_id"]: row for row in doc_rows})
        except Exception as e:
            raise StorageError(f"cannot write to {self.where} ({first_line(e)}); the documents written so far are "
                               "kept, and the next `kb ingest` finishes the rest") from e
        return sum(row["chunks"] for row in old.values() if row is not None)

    def _version_rows(self, r: Record, version: int, cid: int, centring: Centering,
                      side_centrings: dict[str, tuple[int, Centering]]):
        """(chunk rows, text part rows, document row, side collection -> rows) of one version of a document, its
        vectors in `centring` (the ensemble's in `side_centrings`)."""
        langs = [language(c.text) for c in r.chunks]
        raw = np.ascontiguousarray(r.vectors, dtype=np.float32)
        centred, norms = centre(centring, raw, langs)
        chunk_rows = []
        for c, vec, norm, lang, terms in zip(r.chunks, centred, norms, langs, r.terms):
            chunk_rows.append({
                "pk": pk(c.chunk_id, version), "chunk_id": c.chunk_id, "doc_id": c.doc_id, "version": version,
                "ordinal": c.ordinal, "text": cut(c.text), "section": cut(c.section, 4096), "page": c.page,
                "char_start": c.char_start, "char_end": c.char_end, "lang": lang, "centring": cid,
                "norm": float(norm), "terms": cut(terms), "bm25_text": cut(bm25_text(terms)),
                "vector": vec.tolist()})
        parts = [r.text[i:i + TEXT_PART] for i in range(0, len(r.text), TEXT_PART)] or [""]
        text_rows = [{"pk": pk(r.info.doc_id, version, i), "doc_id": r.info.doc_id, "version": version,
                      "part": i, "text": part, "_v": [0.0, 0.0]} for i, part in enumerate(parts)]
        row = {"doc_id": r.info.doc_id, "path": cut(r.info.path, 4096), "title": cut(r.info.title, 2048),
               "file_type": r.info.file_type[:32], "content_hash": r.info.content_hash, "size": r.info.size,
               "mtime": r.info.mtime, "ingested_at": r.info.ingested_at, "version": version,
               "chunks": len(r.chunks), "parts": len(parts)}
        for lang in LANGUAGES:
            mine = raw[np.asarray(langs) == lang] if len(raw) else raw
            row[f"n_{lang}"] = int(len(mine))
            row[f"sum_{lang}"] = (mine.sum(axis=0) if len(mine) else np.zeros(self.dim)).astype(np.float32).tolist()
        side_rows: dict[str, list[dict]] = {}
        if self.sides:
            side_rows, row["side_sums"] = self._side_rows(r, version, langs, side_centrings)
        return chunk_rows, text_rows, row, side_rows

    def touch_document(self, path: str, mtime: float) -> None:
        doc = next((r for r in self._doc_rows().values() if r["path"] == path), None)
        if doc is None:
            return
        full = self.client.query(self.docs, filter=f"doc_id == {json.dumps(doc['doc_id'])}", output_fields=["*"])
        if full:
            row = {k: v for k, v in full[0].items() if k in DOC_FIELDS}
            row["mtime"] = mtime
            self.client.upsert(self.docs, [row])
            self._bump({row["doc_id"]: row})

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """The document rows first (the commit), then their chunks, text parts and side vectors."""
        ids = [d for d in doc_ids]
        if not ids:
            return 0
        self._recover()
        removed = 0
        for part in batches(ids, 500):
            removed += sum(r["chunks"] for r in self.client.query(self.docs, filter=f"doc_id in {literal(part)}",
                                                                  output_fields=["chunks"]))
            self._set_meta({f"pending:{d}:0": "" for d in part})
            self.client.delete(self.docs, filter=f"doc_id in {literal(part)}")
            for collection in self._versioned:
                self.client.delete(collection, filter=f"doc_id in {literal(part)}")
            self.client.delete(self.meta, filter=f"key in {literal(f'pending:{d}:0' for d in part)}")
        self._bump(dict.fromkeys(ids))
        return removed
