"""The other embedders of a KB's ensemble in the Milvus store: `MilvusSides`, between MilvusCentring and the writes.

A KB built with an ensemble (manifest "ensemble") keeps each other embedder's vectors in a collection of its own
per build, <prefix><build>_side_<tag> (schema.py): one row per chunk version the model embedded, none for the
chunks it skipped. The rows carry their chunk's (doc_id, version), so the commit (the document row's upsert), the
deletion of old versions and of a killed writer's leftovers, removal and rebuilds treat them exactly as the chunk
rows (rows.py's `_versioned`): a reader sees the side vectors of the version a document's row names, or none.

Centring. Each model's vectors are stored centred on its own per-language means, fitted without a prior (the KB's
language prior is the main embedder's, in another space), as the local store's ensemble index is, so that a
migrated KB ranks alike in both stores. The documents' rows carry each model's per-language sums of its raw
vectors (the side_sums field: JSON, base64 float32), and the means are refit from them whenever the main
centring is (`_recentre`: at each doubling of the KB and at finish()), the rows rewritten when a mean moved more
than RECENTRE_AT. Until a model has MIN_CHUNKS vectors its space is not centred (kb.stores.centring.fit_sums's rule).

Left out: a preset centring (a migration writes side vectors as a first ingest does, uncentred, and the refits
rewrite them); the rows' writing and deleting (writes.py) and the search and export (store.py) call the helpers
here.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from kb.errors import IndexFormatError, StorageError
from kb.stores.base import Record, SideVectors
from kb.stores.centring import Centering, distance, fit_sums
from kb.stores.milvus.centring import RECENTRE_AT, MilvusCentring
from kb.stores.milvus.client import first_line
from kb.stores.milvus.rows import centre
from kb.stores.milvus.schema import SIDE_FIELDS, literal, pk, side_tag
from kb.text.lang import LANGUAGES
from kb.types import Chunk


class MilvusSides(MilvusCentring):
    """The ensemble's side collections: their centrings, rows, refits and export (a KB of one embedder has none)."""

    def _side(self, model: str) -> str:
        """The collection of `model`'s vectors; StorageError if the KB's ensemble has no such embedder."""
        if model not in self.sides:
            raise StorageError(f"{self.where} holds no vectors of embedding model '{model}' (its ensemble: "
                               f"{sorted(self.sides) or 'none'}); rebuild the KB with `kb ingest PATH --rebuild` "
                               "to embed it with embedding.models")
        return self.sides[model]

    # -- centrings: meta "side:<tag>:applied" -> id, "side:<tag>:centring:<id>" -> JSON ------------------
    @staticmethod
    def _side_key(model: str, what: str) -> str:
        return f"side:{side_tag(model)}:{what}"

    def _side_centring(self, model: str, cid: int) -> Centering:
        key = self._side_key(model, f"centring:{cid}")
        if key not in self._side_centrings:
            value = self._meta(key)
            if value is None:
                raise IndexFormatError(f"{self.where}: the centring {cid} of '{model}' is missing from {self.meta}; "
                                       "rebuild the KB with `kb ingest PATH --rebuild`")
            self._side_centrings[key] = Centering.from_json(value)
        return self._side_centrings[key]

    def _side_applied(self, model: str) -> tuple[int, Centering]:
        """The centring `model`'s stored vectors are in (its id); none (not centred) recorded on the first write."""
        value = self._meta(self._side_key(model, "applied"))
        if value is None:
            self._set_meta({self._side_key(model, "centring:1"): Centering().to_json(),
                            self._side_key(model, "applied"): "1"})
            return 1, Centering()
        return int(value), self._side_centring(model, int(value))

    def _side_applied_for_reading(self, model: str) -> Centering:
        value = self._meta(self._side_key(model, "applied"))
        return self._side_centring(model, int(value)) if value is not None else Centering()

    def _side_raw(self, model: str, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        return self._raw(rows, lambda cid: self._side_centring(model, cid))

    # -- rows of one document version ---------------------------------------------------------------------
    def _check_sides(self, records: list[Record]) -> None:
        """StorageError before anything is written when a record holds vectors this KB has no place for."""
        for r in records:
            for model, side in r.ensemble.items():
                self._side(model)
                if len(side.rows) and np.shape(side.vectors)[1:] != (self.side_dims[model],):
                    raise StorageError(f"vectors of '{model}' for {r.info.path} have shape {np.shape(side.vectors)}; "
                                       f"{self.where} holds {self.side_dims[model]} dimensions")

    def _side_rows(self, r: Record, version: int, langs: list[str],
                   centrings: dict[str, tuple[int, Centering]]) -> tuple[dict[str, list[dict[str, Any]]], str]:
        """(side collection -> rows, the document row's side_sums) of one version of a document, its vectors in
        each model's applied centring."""
        rows: dict[str, list[dict[str, Any]]] = {}
        sums: dict[str, dict[str, list]] = {}
        for model, side in r.ensemble.items():
            cid, centring = centrings[model]
            raw = np.ascontiguousarray(side.vectors, dtype=np.float32).reshape(len(side.rows), self.side_dims[model])
            side_langs = [langs[i] for i in side.rows]
            centred, norms = centre(centring, raw, side_langs)
            rows[self.sides[model]] = [
                {"pk": pk(r.chunks[i].chunk_id, version), "chunk_id": r.chunks[i].chunk_id, "doc_id": r.info.doc_id,
                 "version": version, "lang": lang, "centring": cid, "norm": float(norm), "vector": vec.tolist()}
                for i, lang, vec, norm in zip(side.rows, side_langs, centred, norms)]
            mine = np.asarray(side_langs, dtype=str)
            sums[model] = {lang: [int((mine == lang).sum()), _b64(raw[mine == lang].sum(axis=0, dtype=np.float64))]
                           for lang in LANGUAGES if (mine == lang).any()}
        return rows, json.dumps(sums)

    # -- refits -------------------------------------------------------------------------------------------
    def _side_fitted(self) -> dict[str, Centering]:
        """Each model's centring from the documents' running sums, without a prior (as the local store fits it)."""
        sums = {m: {lang: np.zeros(d, dtype=np.float64) for lang in LANGUAGES} for m, d in self.side_dims.items()}
        counts = {m: dict.fromkeys(LANGUAGES, 0) for m in self.side_dims}
        for row in self._scan(self.docs, "", ["doc_id", "side_sums"]):
            for model, by_lang in json.loads(row.get("side_sums") or "{}").items():
                for lang, (n, data) in by_lang.items():
                    if model in sums and lang in LANGUAGES:
                        sums[model][lang] += np.frombuffer(base64.b64decode(data), dtype="<f4")
                        counts[model][lang] += n
        return {m: fit_sums(sums[m], counts[m]) for m in self.side_dims}

    def _recentre(self) -> None:
        """The main embedder's centring refit (MilvusCentring), then each other embedder's."""
        super()._recentre()
        if self.sides:
            for model, fitted in self._side_fitted().items():
                self._recentre_side(model, fitted)

    def _recentre_side(self, model: str, fitted: Centering) -> None:
        value = self._meta(self._side_key(model, "applied"))
        if value is None or distance(fitted, self._side_centring(model, int(value))) <= RECENTRE_AT:
            return  # nothing written yet (the first write records its centring), or close enough
        prefix = self._side_key(model, "centring:")
        ids = [int(r["key"].rsplit(":", 1)[1]) for r in self.client.query(self.meta, filter=f'key like "{prefix}%"',
                                                                          output_fields=["key"])]
        new = max(ids + [int(value)]) + 1
        self._set_meta({f"{prefix}{new}": fitted.to_json()})
        self._side_centrings[f"{prefix}{new}"] = fitted
        try:
            self._rewrite(self.sides[model], SIDE_FIELDS, new, fitted, lambda rows: self._side_raw(model, rows))
            self._set_meta({self._side_key(model, "applied"): str(new)})
            self.client.delete(self.meta, filter=f'key like "{prefix}%" and key != "{prefix}{new}"')
            self._side_centrings = {k: v for k, v in self._side_centrings.items()
                                    if not k.startswith(prefix) or k == f"{prefix}{new}"}
            self._bump({})
        except Exception as e:
            raise StorageError(f"cannot rewrite the vectors of '{model}' in {self.where} ({first_line(e)}); searches "
                               "still work and the next `kb ingest` finishes it") from e

    def finished(self) -> bool:
        if not super().finished():
            return False
        fitted = self._side_fitted() if self.sides else {}
        for model, centring in fitted.items():
            value = self._meta(self._side_key(model, "applied"))
            if value is not None and distance(centring, self._side_centring(model, int(value))) > RECENTRE_AT:
                return False
        return True

    # -- export -------------------------------------------------------------------------------------------
    def _side_export(self, chunks: dict[str, list[Chunk]]) -> dict[str, dict[str, SideVectors]]:
        """doc_id -> model -> its committed side vectors (raw, by position in the document's chunks), every model
        present (empty where it read none), for export."""
        out: dict[str, dict[str, SideVectors]] = {d: {} for d in chunks}
        expr = f"doc_id in {literal(chunks)}"
        for model, collection in self.sides.items():
            by_doc: dict[str, list[dict[str, Any]]] = {}
            for row in self._scan(collection, expr, SIDE_FIELDS):
                if self._live(row):
                    by_doc.setdefault(row["doc_id"], []).append(row)
            for doc_id, mine in chunks.items():
                position = {c.chunk_id: i for i, c in enumerate(mine)}
                found = sorted((r for r in by_doc.get(doc_id, []) if r["chunk_id"] in position),
                               key=lambda r: position[r["chunk_id"]])
                vectors = (np.stack(self._side_raw(model, found)) if found
                           else np.zeros((0, self.side_dims[model]), dtype=np.float32))
                out[doc_id][model] = SideVectors(tuple(position[r["chunk_id"]] for r in found), vectors)
        return out


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
