"""Hybrid retrieval: dense (FAISS) and keyword (FTS5 BM25) rankings fused by reciprocal rank, then
optional rerank, de-duplication, MMR diversity and neighbour expansion. A KB built with an ensemble of
embedders (embedding.models) has one dense ranking per embedder, each weighted by how much of the query its
model reads: the two default embedders miss different questions (README, Performance).

Scores users see are in [0, 1], higher is more relevant:
- hybrid: the fused RRF score divided by the best possible one (rank 1 in every retriever), so 1.0
  means "first for both", 0.5 roughly "first for one of two equally weighted retrievers";
- dense: the cosine similarity in the KB's language-centred space (kb/stores/centring.py), clipped at 0; with
  several embedders that read the query, their RRF score as in hybrid;
- bm25: bm25 / (bm25 + 1), a monotone squashing of FTS5's unbounded score;
- with a reranker: the sigmoid of the cross-encoder's logit (its own probability of relevance).
`retrieval.threshold` applies to whichever of these is in force.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kb.config import RetrievalSettings
from kb.stores import Store
from kb.text.lang import language
from kb.types import Hit

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kb-dense")


@dataclass(frozen=True)
class Filter:
    """Restrict a search: path globs ('*.pdf', 'docs/2024/*', a folder), file types ('pdf'), document ids."""

    paths: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.paths or self.file_types or self.doc_ids)


Ranking = list[int] | dict[int, int]  # chunk ids best first, or chunk id -> rank


def rrf_fuse(rankings: dict[str, Ranking], weights: dict[str, float], k: int,
             bonus: frozenset[str] = frozenset(), tiebreak: str | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum_r w_r / (k + rank_r(d)), normalized by its maximum over the rankings
    not in `bonus` (capped at 1): a bonus ranking (the dictionary search) can lift a passage, but a passage it
    does not find (one in the question's own language) keeps the score it would have without it. A ranking is a
    list (best first) or a dict of ranks (where two chunks may share one: see _defer). Equal scores are ordered
    by the ranking named `tiebreak` (two embedders that swap two passages tie them), then by chunk id."""
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        w = weights.get(name, 1.0)
        pairs = ranking.items() if isinstance(ranking, dict) else ((c, r) for r, c in enumerate(ranking, start=1))
        for chunk_id, rank in pairs:
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w / (k + rank)
    best = sum(weights.get(name, 1.0) for name in rankings if name not in bonus) / (k + 1)
    first = rankings.get(tiebreak, []) if tiebreak else []
    order = first if isinstance(first, dict) else {cid: r for r, cid in enumerate(first, start=1)}
    fused = sorted(scores.items(), key=lambda kv: (-round(kv[1], 12), order.get(kv[0], len(order) + 1), kv[0]))
    return [(cid, min(1.0, s / best) if best > 0 else 0.0) for cid, s in fused]


@dataclass(frozen=True)
class DenseSide:
    """One of the KB's embedders as search uses it: `model` None for the main one (its ranking is "dense"), else
    an ensemble member's name ("dense:NAME"); `embed(text) -> (query vector, readable share 0..1)`; `reads(text)`,
    for an ensemble member, whether it indexed a chunk of that text (None: every chunk)."""

    model: str | None
    embed: Callable[[str], tuple[np.ndarray, float]]
    reads: Callable[[str], bool] | None = None

    @property
    def ranking(self) -> str:
        return "dense" if self.model is None else f"dense:{self.model}"


def search(store: Store, embed_query, query: str, settings: RetrievalSettings, k: int,
           mode: str | None = None, where: Filter | None = None, reranker=None, also: tuple[str, ...] = (),
           dictionary: str | None = None, extra_rankings: dict[str, tuple[list[int], float]] | None = None) -> list[Hit]:
    """Top-k hits for a query.

    `embed_query` is the KB's embedders as DenseSide objects (or one `embed(text) -> (vector, readable)`
    function, the main embedder alone), called only when dense search runs; `readable` (0..1) is the share of
    the query the model can read, and scales that dense ranking's fusion weight (an English-only model sees a
    Chinese query as unknown tokens, and gets weight 0 for it). `reranker(query, texts) -> scores in [0, 1]`
    re-scores the fused candidates when given. `also` holds other wordings of the query (a translation): each
    adds its own rankings, fused like the query's. Dense mode with several embedders fuses their rankings by
    RRF too; with one (or one that reads the query) it keeps the cosine, as bm25 mode keeps each chunk's best
    keyword score. `dictionary` is the query glossed word by word into the other language (kb/retrieval/glossary.py), in
    hybrid mode searched by keyword at retrieval.dictionary_weight ("dictionary"), a bonus ranking (it lifts a
    passage, never lowers one). Keyword only: embedding the gloss too (a bag of glosses, searched by each
    embedder at half weight) found 4 more dev-set questions of 160, but in a KB that holds both languages'
    versions of one text it put the other language's version above an exact match in the question's own: the
    dictionary's weight must stay under what one same-language ranking adds. `extra_rankings` (name -> (chunk ids best first, weight)) are bonus rankings
    made elsewhere (benchmarks' variants)."""
    mode = mode or settings.mode
    sides = list(embed_query) if isinstance(embed_query, list | tuple) else [DenseSide(None, embed_query)]
    n = max(settings.candidates, k, settings.rerank_candidates if reranker else 0)
    doc_ids = None
    if where:
        doc_ids = store.matching_documents(list(where.paths) or None, list(where.file_types) or None,
                                           list(where.doc_ids) or None)
    rankings: dict[str, Ranking] = {}
    raw: dict[str, dict[int, float]] = {}
    weights: dict[str, float] = {}
    glossed = None  # the dictionary search runs beside the query's own searches
    if mode == "hybrid" and dictionary and settings.dictionary_weight > 0:
        glossed = _pool.submit(store.keyword_query(doc_ids), dictionary, n)
    for i, text in enumerate((query, *also)):
        suffix = f"@{i}" if i else ""  # "dense", "bm25" for the query; "dense@1", ... for a translation
        ranks, scores, readable = _rank(store, sides, text, mode, n, doc_ids)
        ranks.update(_defer(store, sides, ranks))
        rankings.update({name + suffix: ids for name, ids in ranks.items()})
        raw.update({name + suffix: s for name, s in scores.items()})
        weights.update({name + suffix: settings.dense_weight * share for name, share in readable.items()})
        weights["bm25" + suffix] = settings.bm25_weight

    bonus = dict(extra_rankings or {})
    found = glossed.result() if glossed is not None else []
    if found:
        bonus["dictionary"] = ([cid for cid, _ in found], settings.dictionary_weight)
    scored = _fuse(mode, rankings, raw, weights, bonus, settings.rrf_k)

    pool = scored[:settings.rerank_candidates] if reranker else scored
    rows = store.chunks_by_id([cid for cid, _ in pool])
    if reranker:
        pool = [(cid, s) for cid, s in pool if cid in rows]
        new = reranker(query, [rows[cid]["text"] for cid, _ in pool])
        pool = sorted(zip([cid for cid, _ in pool], new), key=lambda kv: -kv[1])
    pool = _dedupe([(cid, s) for cid, s in pool if cid in rows and s >= settings.threshold], rows)
    if settings.mmr and len(pool) > k:
        pool = _mmr(pool, store.vectors_of([cid for cid, _ in pool]), k, settings.mmr_lambda)
    ranks = {name: ids if isinstance(ids, dict) else {cid: r for r, cid in enumerate(ids, start=1)}
             for name, ids in rankings.items()}
    hits = [_hit(rows[cid], s, {name: rk[cid] for name, rk in ranks.items() if cid in rk}) for cid, s in pool[:k]]
    if settings.neighbors:
        hits = [_expand(store, h, rows[h.chunk_id]["ordinal"], settings.neighbors) for h in hits]
    return hits


def _fuse(mode: str, rankings: dict[str, Ranking], raw: dict[str, dict[int, float]], weights: dict[str, float],
          bonus: dict[str, tuple[list[int], float]], rrf_k: int) -> list[tuple[int, float]]:
    """(chunk id, score) best first, as the mode scores them (see the module docstring); `bonus` rankings count
    in hybrid mode only. Fills `rankings` with the bonus ones, for the hits' ranks."""
    reading = {name for name in rankings if weights[name] > 0}
    if mode == "hybrid":
        for name, (ids, weight) in bonus.items():
            rankings[name], weights[name] = ids, weight
        return rrf_fuse(rankings, weights, rrf_k, frozenset(bonus), tiebreak="dense")
    if mode == "dense" and len({name.split("@")[0] for name in reading}) > 1:  # several embedders read the query
        return rrf_fuse({name: rankings[name] for name in reading}, weights, rrf_k, tiebreak="dense")
    if mode == "dense":
        return _best_of([{cid: max(0.0, s) for cid, s in r.items()} for name, r in raw.items()
                         if name in reading or not reading])
    return _best_of([{cid: s / (s + 1.0) for cid, s in r.items()} for r in raw.values()])


def _defer(store, sides: list[DenseSide], ranks: dict[str, list[int]]) -> dict[str, dict[int, int]]:
    """Each ensemble member's ranking completed with the main embedder's ranks of the chunks it did not index.

    all-MiniLM-L6-v2 indexes only the chunks it reads, so for an English question over Chinese evidence its
    ranking holds only English passages and, fused, votes against the Chinese one that e5 ranks first (the
    README's "What should I do if there is a fire in the office?" put 办公室安全须知.txt 4th in hybrid search and
    out of the top 6 in dense). A model defers to the main one on what it cannot read, so each side keeps its
    weight. Dev set: en->zh hit@5 +2 questions of 18, English -1 of 34."""
    out: dict[str, dict[int, int]] = {}
    main = ranks.get("dense")
    for side in sides:
        if side.reads is None or main is None or side.ranking not in ranks:
            continue
        own = {cid: r for r, cid in enumerate(ranks[side.ranking], start=1)}
        rows = store.chunks_by_id([cid for cid in main if cid not in own])
        unread = {cid: r for r, cid in enumerate(main, start=1) if cid in rows and not side.reads(rows[cid]["text"])}
        out[side.ranking] = {**unread, **own}
    return out


def _best_of(scores: list[dict[int, float]]) -> list[tuple[int, float]]:
    """Each chunk's best score over several rankings, best first."""
    best: dict[int, float] = {}
    for one in scores:
        for cid, s in one.items():
            best[cid] = max(s, best.get(cid, s))
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))


def _rank(store, sides: list[DenseSide], query, mode, n, doc_ids):
    """Each retriever's ranking (chunk ids, best first), its raw scores, and each dense ranking's readable share.

    Each embedder embeds the query and searches its index in a worker thread (one thread each: a single query
    gains nothing from more) while the store runs the keyword search here: all of them release the GIL, so the
    retrievers overlap on two cores."""
    rankings: dict[str, list[int]] = {}
    raw: dict[str, dict[int, float]] = {}
    readable: dict[str, float] = {}
    jobs = []
    if mode in ("hybrid", "dense"):
        lang = language(query)
        for side in sides:
            dense_query = store.dense_query(doc_ids, side.model)  # prepared here, on the thread that owns the store

            def dense_part(side=side, dense_query=dense_query):
                vector, share = side.embed(query)
                return (dense_query(vector, n, lang) if share > 0 or side.model is None else []), share

            jobs.append((side.ranking, _pool.submit(dense_part) if len(sides) > 1 or mode == "hybrid" else None,
                         dense_part))
    if mode in ("hybrid", "bm25"):
        keyword = store.keyword_search(query, n, doc_ids)
        rankings["bm25"] = [cid for cid, _ in keyword]
        raw["bm25"] = dict(keyword)
    for name, job, run in jobs:
        dense, share = job.result() if job is not None else run()
        readable[name] = share
        if share > 0 or name == "dense":  # a model that reads none of the query has no say (nor ranks to show)
            rankings[name] = [cid for cid, _ in dense]
            raw[name] = dict(dense)
    return rankings, raw, readable


def _dedupe(pool: list[tuple[int, float]], rows: dict[int, dict[str, Any]]) -> list[tuple[int, float]]:
    """Drop a hit whose text (whitespace-collapsed) equals a better one's: copies of one file, repeated boilerplate."""
    seen: set[str] = set()
    out = []
    for cid, s in pool:
        key = " ".join(rows[cid]["text"].split())
        if key not in seen:
            seen.add(key)
            out.append((cid, s))
    return out


def _mmr(pool: list[tuple[int, float]], vectors: dict[int, np.ndarray], k: int, lam: float) -> list[tuple[int, float]]:
    """Maximal marginal relevance: each pick trades relevance against similarity to the picks so far."""
    chosen: list[tuple[int, float]] = []
    rest = [p for p in pool if p[0] in vectors]
    while rest and len(chosen) < k:
        def gain(item):
            cid, s = item
            sim = max((float(vectors[cid] @ vectors[c]) for c, _ in chosen), default=0.0)
            return lam * s - (1 - lam) * sim

        best = max(rest, key=gain)
        chosen.append(best)
        rest.remove(best)
    return chosen


def _expand(store: Store, hit: Hit, ordinal: int, n: int) -> Hit:
    """Merge up to n adjacent chunks of the same section on each side into the hit's text."""
    rows = [r for r in store.neighbours(hit.doc_id, ordinal - n, ordinal + n) if r[1] == hit.section]
    own = next(i for i, r in enumerate(rows) if r[0] == ordinal)
    lo = own
    while lo > 0 and rows[lo - 1][0] == rows[lo][0] - 1:
        lo -= 1
    hi = own
    while hi < len(rows) - 1 and rows[hi + 1][0] == rows[hi][0] + 1:
        hi += 1
    if lo == hi:
        return hit
    doc_text = store.document_text(hit.doc_id) or ""
    start, end = min(r[2] for r in rows[lo:hi + 1]), max(r[3] for r in rows[lo:hi + 1])
    return replace(hit, text=doc_text[start:end], char_start=start, char_end=end)


def _hit(row: dict[str, Any], score: float, ranks: dict[str, int]) -> Hit:
    return Hit(
        chunk_id=row["chunk_id"], doc_id=row["doc_id"], path=row["path"], title=row["title"],
        section=row["section"], page=row["page"], text=row["text"], score=round(float(score), 6),
        char_start=row["char_start"], char_end=row["char_end"], ranks=ranks,
    )
