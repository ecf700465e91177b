"""The Milvus store: knowledge bases in Milvus, shared by every machine and `kb serve` replica pointed at it.

`MilvusStore` is kb/stores/base.py's Store for one build of one KB (the collections are described in
kb/stores/milvus/__init__.py). This module holds the reads: documents and their text, chunks by id or
document, neighbours, raw vectors, filters, the two rankings (Milvus's BM25 over kb's terms, and dense
search in the KB's centred space, or in an ensemble member's side collection, all asking EXTRA more hits than
needed and keeping only committed versions) and the export for `kb migrate`. Its bases hold the rest:
writes.py (MilvusWrites) the commits, sides.py (MilvusSides) the ensemble's side collections, centring.py
(MilvusCentring) the centring upkeep, rows.py (MilvusRows) the collections, meta and the committed document
list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from kb.stores.base import CHUNK_FIELDS, DenseQuery, KeywordQuery, Record, batches, filter_documents
from kb.stores.milvus.schema import BATCH, CHUNK_OUT, bm25_text, literal
from kb.stores.milvus.writes import MilvusWrites
from kb.text.keywords import query_terms
from kb.types import Chunk, DocumentInfo, DocumentState

EXTRA = 16  # more hits asked of Milvus than needed, for versions that are not (or no longer) committed


class MilvusStore(MilvusWrites):
    """One build of one KB in Milvus (kb/stores/base.py's Store)."""

    def document_states(self) -> dict[str, DocumentState]:
        return {r["path"]: DocumentState(r["content_hash"], r["size"], r["mtime"], r["doc_id"])
                for r in self._doc_rows().values()}

    def documents(self) -> list[DocumentInfo]:
        return sorted((_info(r) for r in self._doc_rows().values()), key=lambda d: d.path)

    def document(self, doc_id: str) -> DocumentInfo | None:
        row = self._doc_rows().get(doc_id)
        return _info(row) if row is not None else None

    def page_lines(self, doc_id: str, page: int) -> bytes | None:
        """None: a Milvus KB keeps no OCR lines (a scan's passage is found on its page by OCR at view time)."""
        return None

    def document_text(self, doc_id: str) -> str | None:
        doc = self._doc_rows().get(doc_id)
        if doc is None:
            return None
        rows = self.client.query(self.texts, filter=f"doc_id == {json.dumps(doc_id)} and version == {doc['version']}",
                                 output_fields=["part", "text"], limit=max(1, doc["parts"]))
        return "".join(r["text"] for r in sorted(rows, key=lambda r: r["part"]))

    # -- chunks ----------------------------------------------------------------------------------
    def chunks_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        docs = self._doc_rows()
        for part in batches(ids, 500):
            for r in self.client.query(self.chunks, filter=f"chunk_id in {literal(part)}", output_fields=CHUNK_OUT):
                if self._live(r):
                    doc = docs[r["doc_id"]]
                    out[r["chunk_id"]] = {f: (doc[f] if f in ("path", "title") else r[f]) for f in CHUNK_FIELDS}
        return out

    def chunk_ids_of(self, doc_ids: list[str]) -> np.ndarray:
        ids: list[int] = []
        for part in batches(doc_ids, 200):
            rows = self._chunk_rows(f"doc_id in {literal(part)}", ["chunk_id", "doc_id", "version", "ordinal"])
            ids.extend(r["chunk_id"] for r in sorted(rows, key=lambda r: (r["doc_id"], r["ordinal"])))
        return np.asarray(ids, dtype=np.int64)

    def neighbours(self, doc_id: str, first: int, last: int) -> list[tuple[int, str, int, int, str]]:
        doc = self._doc_rows().get(doc_id)
        if doc is None:
            return []
        rows = self.client.query(
            self.chunks, filter=f"doc_id == {json.dumps(doc_id)} and version == {doc['version']} and "
                                f"ordinal >= {int(first)} and ordinal <= {int(last)}",
            output_fields=["ordinal", "section", "char_start", "char_end", "text"])
        return [(r["ordinal"], r["section"], r["char_start"], r["char_end"], r["text"])
                for r in sorted(rows, key=lambda r: r["ordinal"])]

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for part in batches(ids, 500):
            rows = [r for r in self.client.query(self.chunks, filter=f"chunk_id in {literal(part)}",
                                                 output_fields=["chunk_id", "doc_id", "version", "vector", "norm",
                                                                "lang", "centring"]) if self._live(r)]
            out.update(zip((r["chunk_id"] for r in rows), self._raw(rows)))
        return out

    # -- filters and the two rankings ------------------------------------------------------------
    def matching_documents(self, paths: list[str] | None, file_types: list[str] | None,
                           doc_ids: list[str] | None) -> list[str]:
        rows = ((r["doc_id"], r["path"], r["file_type"]) for r in self._doc_rows().values())
        return filter_documents(rows, paths, file_types, doc_ids)

    def _search(self, data, field: str, limit: int, doc_ids: list[str] | None, params: dict,
                collection: str | None = None) -> list[tuple[int, float]]:
        """Hits of committed versions in the chunks collection (or a side collection), best first."""
        if doc_ids == []:
            return []
        expr = "" if doc_ids is None else f"doc_id in {literal(doc_ids)}"
        found = self.client.search(collection or self.chunks, data=[data], anns_field=field, limit=limit + EXTRA,
                                   filter=expr, output_fields=["chunk_id", "doc_id", "version"], search_params=params)
        out, seen = [], set()
        for hit in found[0]:
            row = hit["entity"]
            if self._live(row) and row["chunk_id"] not in seen:
                seen.add(row["chunk_id"])
                out.append((int(row["chunk_id"]), float(hit["distance"])))
        return out[:limit]

    def keyword_search(self, query: str, limit: int, doc_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """Milvus's BM25 over kb's terms (the same jieba segmentation as the local store's FTS5 index)."""
        terms = bm25_text(" ".join(query_terms(query)))
        if not terms:
            return []
        hits = self._search(terms, "sparse", limit, doc_ids, {"metric_type": "BM25"})
        # BM25 is never negative; Milvus servers give it as the distance, Milvus Lite 3.2 its negation (best first
        # in both)
        return [(cid, abs(score)) for cid, score in hits]

    def keyword_query(self, doc_ids: list[str] | None = None) -> KeywordQuery:
        """keyword_search for another thread (the client serves several threads, as dense_query's do)."""
        return lambda query, limit: self.keyword_search(query, limit, doc_ids)

    def term_document_frequency(self, terms: list[str]) -> dict[str, int]:
        """{}: Milvus keeps its BM25 statistics to itself, so kb/answer/extract.py weighs a question's terms over the
        passages at hand instead."""
        return {}

    def dense_query(self, doc_ids: list[str] | None = None, model: str | None = None) -> DenseQuery:
        """Dense search in the main embedder's centred space, or (`model`) in that ensemble member's, over the
        chunks it embedded only."""
        if model is None:
            collection, centring = self.chunks, self._applied_for_reading()
        else:
            collection, centring = self._side(model), self._side_applied_for_reading(model)

        def run(vector: np.ndarray, limit: int, lang: str) -> list[tuple[int, float]]:
            q = centring.query(np.asarray(vector, dtype=np.float32), lang)
            return self._search(q.tolist(), "vector", limit, doc_ids, {"metric_type": "IP"}, collection)

        self._doc_rows()  # read here, on the caller's thread
        return run

    # -- the whole KB ----------------------------------------------------------------------------
    def disk_bytes(self) -> int | None:
        return None  # Milvus keeps its own storage

    def export(self) -> Iterator[Record]:
        docs = sorted(self._doc_rows().values(), key=lambda r: r["path"])
        fields = CHUNK_OUT + ["lang", "centring", "norm", "terms", "vector"]
        group: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            group.append(doc)
            if sum(d["chunks"] for d in group) < BATCH * 4 and i + 1 < len(docs):
                continue
            rows = self._chunk_rows(f"doc_id in {literal(d['doc_id'] for d in group)}", fields)
            by_doc: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_doc.setdefault(r["doc_id"], []).append(r)
            ordered = {d["doc_id"]: sorted(by_doc.get(d["doc_id"], []), key=lambda r: r["ordinal"]) for d in group}
            chunks = {doc_id: [Chunk(r["chunk_id"], r["doc_id"], r["ordinal"], r["text"], r["section"], r["page"],
                                     r["char_start"], r["char_end"]) for r in mine] for doc_id, mine in ordered.items()}
            sides = self._side_export(chunks) if self.sides else {}
            for d in group:
                mine = ordered[d["doc_id"]]
                vectors = np.stack(self._raw(mine)) if mine else np.zeros((0, self.dim), dtype=np.float32)
                info = DocumentInfo(d["doc_id"], d["path"], d["title"], d["content_hash"], d["size"], d["mtime"],
                                    len(mine), d["ingested_at"], d["file_type"])
                yield Record(info, self.document_text(d["doc_id"]) or "", chunks[d["doc_id"]], vectors,
                             [r["terms"] for r in mine], sides.get(d["doc_id"], {}))
            group = []


def _info(row: dict) -> DocumentInfo:
    """A document row of the documents collection as kb's DocumentInfo."""
    return DocumentInfo(row["doc_id"], row["path"], row["title"], row["content_hash"], row["size"], row["mtime"],
                        row["chunks"], row["ingested_at"], row["file_type"])
