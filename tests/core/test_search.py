"""Fusion and scores against hand-computed answers; thresholds; modes."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import KBError
from kb.retrieval.hybrid import rrf_fuse


def test_rrf_matches_hand_computation():
    fused = dict(rrf_fuse({"dense": [1, 2, 3], "bm25": [3, 1]}, {"dense": 1.0, "bm25": 1.0}, k=60))
    best = 2 / 61
    assert fused[1] == pytest.approx((1 / 61 + 1 / 62) / best)
    assert fused[3] == pytest.approx((1 / 63 + 1 / 61) / best)
    assert fused[2] == pytest.approx((1 / 62) / best)
    assert list(dict(rrf_fuse({"dense": [1, 2, 3], "bm25": [3, 1]}, {"dense": 1.0, "bm25": 1.0}, 60))) == [1, 3, 2]


def test_weights_shift_the_order():
    fused = rrf_fuse({"dense": [1, 2], "bm25": [2, 1]}, {"dense": 3.0, "bm25": 1.0}, k=60)
    assert [cid for cid, _ in fused] == [1, 2]


@pytest.fixture
def base(settings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "en.md").write_text("# Boats\n\nThe ferry to the island leaves every hour from pier four.\n")
    (folder / "zh.md").write_text("# 渡轮\n\n去岛上的渡轮每小时从四号码头出发。\n")
    (folder / "other.md").write_text("# Bread\n\nSourdough needs a starter fed with flour and water.\n")
    b = KnowledgeBase.open("search", settings=settings)
    b.ingest(folder)
    yield b
    b.close()


def test_each_mode_finds_its_language(base):
    assert base.search("when does the ferry leave", k=1, mode="dense")[0].path.endswith("en.md")
    assert base.search("渡轮几点出发", k=1, mode="bm25")[0].path.endswith("zh.md")
    top = base.search("渡轮几点出发", k=1)[0]
    assert top.path.endswith("zh.md") and "bm25" in top.ranks


def test_scores_are_between_zero_and_one_and_sorted(base):
    for mode in ("hybrid", "dense", "bm25"):
        hits = base.search("ferry pier island", k=3, mode=mode)
        scores = [h.score for h in hits]
        assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)


def test_threshold_drops_weak_hits(settings, base):
    strict = Settings(home=settings.home, retrieval={"threshold": 0.9})
    with KnowledgeBase.open("search", settings=strict) as b:
        hits = b.search("ferry pier island", k=3)
    assert hits and all(h.score >= 0.9 for h in hits)
    assert len(hits) < len(base.search("ferry pier island", k=3))


def test_empty_query_and_bad_mode(base):
    with pytest.raises(KBError, match="empty"):
        base.search("   ")
    with pytest.raises(KBError, match="unknown retrieval mode"):
        base.search("ferry", mode="magic")


def test_unreadable_query_part_is_dropped_before_embedding(settings):
    from kb.config import MINILM_EMBEDDER, EmbeddingSettings
    from kb.ingest.embed import get_embedder

    minilm = get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER))  # English only: Chinese is [UNK]
    kept, unknown = minilm.readable("请问鲟鱼 json.dumps 乱码")
    assert "json.dumps" in kept and "鲟" not in kept and unknown > 0.3
    assert minilm.readable("plain English question") == ("plain English question", 0.0)
    bilingual = get_embedder(settings.embedding, settings.models_dir)
    assert bilingual.readable("请问鲟鱼 json.dumps 乱码") == ("请问鲟鱼 json.dumps 乱码", 0.0)


def test_the_default_embedder_reads_chinese_queries(base):
    # all-MiniLM-L6-v2 read Chinese as [UNK], so only BM25 could rank a Chinese question; e5 reads it.
    top = base.search("去小岛的船多久一班？", k=1, mode="dense")[0]
    assert top.path.endswith("zh.md") or top.path.endswith("en.md")
    assert not base.search("去小岛的船多久一班？", k=3, mode="dense")[0].path.endswith("other.md")
