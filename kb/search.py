"""Hybrid retrieval: dense (FAISS) and keyword (FTS5 BM25) rankings fused by reciprocal rank.

Scores users see are in [0, 1], higher is more relevant:
- hybrid: the fused RRF score divided by the best possible one (rank 1 in every retriever), so 1.0
  means "first for both", 0.5 roughly "first for one of two equally weighted retrievers";
- dense: the cosine similarity, clipped at 0;
- bm25: bm25 / (bm25 + 1), a monotone squashing of FTS5's unbounded score.
"""

from __future__ import annotations

from typing import Any

from kb.config import RetrievalSettings
from kb.store import Store
from kb.types import Hit


def rrf_fuse(rankings: dict[str, list[int]], weights: dict[str, float], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum_r w_r / (k + rank_r(d)), normalized by its maximum."""
    scores: dict[int, float] = {}
    for name, ids in rankings.items():
        w = weights.get(name, 1.0)
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w / (k + rank)
    best = sum(weights.get(name, 1.0) for name in rankings) / (k + 1)
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, s / best if best > 0 else 0.0) for cid, s in fused]


def search(store: Store, embed_query, query: str, settings: RetrievalSettings, k: int,
           mode: str | None = None) -> list[Hit]:
    """Top-k hits for a query. `embed_query(text) -> vector` is only called when dense search runs."""
    mode = mode or settings.mode
    n = max(settings.candidates, k)
    rankings: dict[str, list[int]] = {}
    raw: dict[str, dict[int, float]] = {}
    if mode in ("hybrid", "dense"):
        dense = store.dense_search(embed_query(query), n)
        rankings["dense"] = [cid for cid, _ in dense]
        raw["dense"] = dict(dense)
    if mode in ("hybrid", "bm25"):
        keyword = store.keyword_search(query, n)
        rankings["bm25"] = [cid for cid, _ in keyword]
        raw["bm25"] = dict(keyword)

    if mode == "hybrid":
        weights = {"dense": settings.dense_weight, "bm25": settings.bm25_weight}
        scored = rrf_fuse(rankings, weights, settings.rrf_k)
    elif mode == "dense":
        scored = [(cid, max(0.0, s)) for cid, s in raw["dense"].items()]
    else:
        scored = [(cid, s / (s + 1.0)) for cid, s in raw["bm25"].items()]
    scored = [(cid, s) for cid, s in scored if s >= settings.threshold][:k]

    rows = store.chunks_by_id([cid for cid, _ in scored])
    ranks = {name: {cid: r for r, cid in enumerate(ids, start=1)} for name, ids in rankings.items()}
    return [_hit(rows[cid], s, {name: rk[cid] for name, rk in ranks.items() if cid in rk})
            for cid, s in scored if cid in rows]


def _hit(row: dict[str, Any], score: float, ranks: dict[str, int]) -> Hit:
    return Hit(
        chunk_id=row["chunk_id"], doc_id=row["doc_id"], path=row["path"], title=row["title"],
        section=row["section"], page=row["page"], text=row["text"], score=round(score, 6),
        char_start=row["char_start"], char_end=row["char_end"], ranks=ranks,
    )
