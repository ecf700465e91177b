"""Centring upkeep for the Milvus store: `MilvusCentring`, between MilvusRows and MilvusSides (sides.py).

Stored vectors are kept in the KB's language-centred space (kb/stores/centring.py) under the id of the centring
they were moved with; the documents' rows carry per-language sums of the raw vectors. This module records
the language prior and the centring applied on the first write, refits from the sums as the KB grows
(`_refit_early`, at every doubling from REFIT_FROM chunks) and at `finish()`, and rewrites the stored
vectors only when a mean moved more than RECENTRE_AT (`_rewrite`, which sides.py uses for the ensemble's
vectors too). How a vector is centred is rows.py's `centre`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kb.errors import StorageError
from kb.stores.base import batches, prior_from_json, prior_to_json
from kb.stores.centring import Centering, distance, fit_sums
from kb.stores.milvus.client import first_line
from kb.stores.milvus.rows import MilvusRows, centre
from kb.stores.milvus.schema import BATCH, CHUNK_OUT, literal
from kb.text.lang import LANGUAGES

RECENTRE_AT = 0.02  # rewrite the stored vectors when a language mean moved this far (unit vectors)
REFIT_FROM = 256  # chunks in a KB before a writer refits its centring early (then at every doubling)


class MilvusCentring(MilvusRows):
    """The language prior, the applied centring, and refitting it (rewriting the vectors when it moved)."""

    def preset_centering(self, centering: Centering) -> None:
        """Store vectors in this centring from the first write on (a copy whose final centring is known: then
        finish() has nothing to rewrite). Only before anything is written."""
        if self._meta("applied") is None and centering.means:
            self._set_meta({"centring:1": centering.to_json(), "applied": "1"})
            self._centrings[1] = centering

    def centering(self) -> Centering:
        counts = {lang: sum(r[f"n_{lang}"] for r in self._doc_rows().values()) for lang in LANGUAGES}
        return Centering(self._applied_for_reading().means, counts)

    def _applied(self) -> tuple[int, Centering]:
        """The centring the stored vectors are in (its id), recorded on the first write from the prior."""
        value = self._meta("applied")
        if value is None:
            centring = fit_sums({}, {}, self.language_prior())
            self._set_meta({"centring:1": centring.to_json(), "applied": "1"})
            self._centrings[1] = centring
            return 1, centring
        return int(value), self._centring(int(value))

    def _applied_for_reading(self) -> Centering:
        value = self._meta("applied")
        return self._centring(int(value)) if value is not None else Centering()

    def language_prior(self) -> dict[str, np.ndarray] | None:
        value = self._meta("language_prior")
        if value is None:
            return None
        return prior_from_json(value)

    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None:
        self._set_meta({"language_prior": prior_to_json(prior)})

    def _fitted(self) -> Centering:
        """The centring the local store would use now, from the documents' running sums."""
        sums = {lang: np.zeros(self.dim, dtype=np.float64) for lang in LANGUAGES}
        counts = {lang: 0 for lang in LANGUAGES}
        for r in self._scan(self.docs, "", ["doc_id"] + [f"{k}_{lang}" for k in ("n", "sum") for lang in LANGUAGES]):
            for lang in LANGUAGES:
                sums[lang] += np.asarray(r[f"sum_{lang}"], dtype=np.float64)
                counts[lang] += r[f"n_{lang}"]
        return fit_sums(sums, counts, self.language_prior())

    def finished(self) -> bool:
        if self.client.query(self.meta, filter='key like "pending:%"', output_fields=["key"], limit=1):
            return False
        value = self._meta("applied")
        return value is None or distance(self._fitted(), self._centring(int(value))) <= RECENTRE_AT

    def finish(self) -> None:
        """Refit the centring and rewrite the stored vectors into it when a mean moved more than RECENTRE_AT;
        then flush, so that the session's rows are in sealed, indexed segments (Milvus Lite otherwise rebuilds
        a BM25 index of its unflushed rows for every search)."""
        self._recover()
        if self._meta("applied") is not None:
            self._recentre()
        for collection in (*self._versioned, self.docs, self.meta):
            self.client.flush(collection)

    def _refit_early(self) -> None:
        """Refit the centring each time the KB has doubled since the last fit (from REFIT_FROM chunks on), so
        that a first big ingest writes most of its vectors already in the final centring: the means settle
        long before the end, and finish() then has little or nothing to rewrite."""
        if self._meta("applied") is None:
            return
        count = self.chunk_count()
        fitted_at = int(self._meta("fitted_at") or 0)
        if count >= max(2 * fitted_at, REFIT_FROM):
            self._recentre()
            self._set_meta({"fitted_at": str(count)})

    def _recentre(self) -> None:
        cid, applied = self._applied()
        fitted = self._fitted()
        if distance(fitted, applied) <= RECENTRE_AT:
            return
        ids = [int(r["key"].split(":")[1]) for r in self.client.query(self.meta, filter='key like "centring:%"',
                                                                          output_fields=["key"])]
        new = max(ids + [cid]) + 1
        self._set_meta({f"centring:{new}": fitted.to_json()})
        self._centrings[new] = fitted
        fields = CHUNK_OUT + ["pk", "lang", "centring", "norm", "terms", "bm25_text", "vector"]
        try:
            self._rewrite(self.chunks, fields, new, fitted, self._raw)
            self._set_meta({"applied": str(new)})
            self.client.delete(self.meta, filter=f"key like \"centring:%\" and key != \"centring:{new}\"")
            self._centrings = {new: fitted}
            self._bump({})
        except Exception as e:
            raise StorageError(f"cannot rewrite the vectors of {self.where} ({first_line(e)}); searches still work "
                               "and the next `kb ingest` finishes it") from e

    def _rewrite(self, collection: str, fields: list[str], new: int, fitted: Centering,
                 raw: Callable[[list[dict[str, Any]]], list[np.ndarray]]) -> None:
        """Move every row of `collection` not yet in centring `new` into `fitted` (`raw`: the rows' vectors as
        the embedder gave them); rows are upserted whole (`fields`). A writer killed half-way leaves rows of
        both centrings, each naming its own, and the next refit finishes the rest."""
        todo = [r["pk"] for r in self._scan(collection, f"centring != {new}", ["pk"])]
        for part in batches(todo, BATCH):
            rows = self.client.query(collection, filter=f"pk in {literal(part)}", output_fields=fields)
            if not rows:
                continue
            centred, norms = centre(fitted, np.stack(raw(rows)), [r["lang"] for r in rows])
            for r, vec, norm in zip(rows, centred, norms):
                r.update(vector=vec.tolist(), norm=float(norm), centring=new)
            self.client.upsert(collection, [{k: r[k] for k in fields} for r in rows])
