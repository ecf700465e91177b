"""Language centring: the dense index compares meaning, not language.

A multilingual embedder scores the language of a text as well as its meaning. With multilingual-e5-small
on the dev set (tests/devset), an unrelated Chinese passage scored 0.88 against a Chinese question whose
English answer scored 0.82, so no zh→en or en→zh question found its answer in the top 5 (0 of 57).
Each language's vectors sit around their own mean; subtracting from every chunk the mean of the chunks
of its language, and from a question the mean of its language, then renormalising, removes that offset:
the same questions found their answer in the top 5 for 0.31 (zh→en) and 0.44 (en→zh) by dense search
alone, while same-language questions moved by at most 0.06 either way (within the set's noise).

The means belong to one knowledge base and one commit: the local store (kb/stores/local/index.py) fits them when it
builds the dense index and records them next to it; the Milvus store refits them from running sums. A language with fewer than MIN_CHUNKS chunks has no reliable mean
of its own: it gets the KB's overall mean (or, in a KB too small for that, the prior's average) moved
by the language's offset in the *prior*: the embedder's mean vectors of 160 generic sentences in each
language (kb/data/lang_reference.jsonl, embedded once per KB when it is first ingested). Without a prior
(KBs built before it existed), such a language uses the KB's overall mean, and a KB with fewer than
MIN_CHUNKS chunks is not centred at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kb.text.lang import LANGUAGES

MIN_CHUNKS = 32


@dataclass(frozen=True)
class Centering:
    """Per-language mean vectors ({} = no centring), and how many chunks of each language the KB holds."""

    means: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def shift(self, lang: str) -> np.ndarray | None:
        return self.means.get(lang, self.means.get("all"))

    def vectors(self, vectors: np.ndarray, langs: list[str]) -> np.ndarray:
        """Chunk vectors moved into the centred space (float32, unit length)."""
        if not self.means or not len(vectors):
            return vectors
        shifts = np.stack([self.shift(lang) for lang in langs]).astype(np.float32)
        return _unit(vectors - shifts)

    def query(self, vector: np.ndarray, lang: str) -> np.ndarray:
        """A question's vector in the centred space."""
        shift = self.shift(lang) if self.means else None
        return vector if shift is None else _unit((vector - shift)[None, :])[0]

    def to_json(self) -> str:
        return json.dumps({"means": {k: [round(float(x), 7) for x in v] for k, v in self.means.items()},
                           "counts": self.counts})

    @classmethod
    def from_json(cls, text: str) -> Centering:
        data = json.loads(text)
        return cls({k: np.asarray(v, dtype=np.float32) for k, v in data["means"].items()},
                   {k: int(v) for k, v in data["counts"].items()})


def fit(vectors: np.ndarray, langs: list[str], prior: dict[str, np.ndarray] | None = None) -> Centering:
    """The means of a KB's chunk vectors per language where a language has enough chunks; else the KB's
    (or the prior's) overall mean moved by the prior's language offset. `prior`: language -> mean vector
    of the embedder over generic text (see reference_means)."""
    labels = np.asarray(langs)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    sums = {lang: vectors[labels == lang].sum(axis=0, dtype=np.float64) if len(vectors) else np.zeros(dim)
            for lang in LANGUAGES}
    counts = {lang: int((labels == lang).sum()) for lang in LANGUAGES}
    return fit_sums(sums, counts, prior)


def fit_sums(sums: dict[str, np.ndarray], counts: dict[str, int],
             prior: dict[str, np.ndarray] | None = None) -> Centering:
    """fit() from each language's sum of vectors and count: a store that keeps running sums (the Milvus
    store keeps them per document) refits without reading every vector."""
    counts = {lang: int(counts.get(lang, 0)) for lang in LANGUAGES}
    total = sum(counts.values())
    overall = (sum(np.asarray(sums[lang], dtype=np.float64) for lang in LANGUAGES if counts[lang]) / total
               if total else None)

    def own(lang: str) -> np.ndarray:
        return np.asarray(sums[lang], dtype=np.float64) / counts[lang]

    prior = {k: v for k, v in (prior or {}).items() if k in LANGUAGES}
    if len(prior) == len(LANGUAGES):
        prior_avg = np.mean([prior[lang] for lang in LANGUAGES], axis=0)
        base = overall if total >= MIN_CHUNKS else prior_avg
        means = {"all": base.astype(np.float32)}
        for lang in LANGUAGES:
            mean = own(lang) if counts[lang] >= MIN_CHUNKS else base + prior[lang] - prior_avg
            means[lang] = mean.astype(np.float32)
        return Centering(means, counts)
    if total < MIN_CHUNKS:
        return Centering({}, counts)
    means = {"all": overall.astype(np.float32)}
    for lang in LANGUAGES:
        if counts[lang] >= MIN_CHUNKS:
            means[lang] = own(lang).astype(np.float32)
    return Centering(means, counts)


def distance(a: Centering, b: Centering) -> float:
    """How far apart two centrings are: the largest move of any mean (inf when they centre different
    languages, or one does not centre at all)."""
    if set(a.means) != set(b.means):
        return float("inf")
    return max((float(np.linalg.norm(a.means[k] - b.means[k])) for k in a.means), default=0.0)


def reference_means(encode) -> dict[str, np.ndarray]:
    """An embedder's mean passage vector per language over kb's generic reference sentences.
    `encode(texts) -> normalised vectors` (the embedder's passage encoding)."""
    path = Path(__file__).parents[1] / "data" / "lang_reference.jsonl"
    pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {lang: np.asarray(encode([p[lang] for p in pairs]), dtype=np.float32).mean(axis=0) for lang in LANGUAGES}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
