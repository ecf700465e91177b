"""The dictionary search across languages as search uses it: a Chinese question reaches an English passage that
shares no word with it by keyword, with no chat model; it stays out of a KB of one language and out of bm25 and
dense modes, and it never lowers the score of a passage in the question's own language."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.config import Settings


@pytest.fixture(scope="module")
def kb_home(tmp_path_factory, shared_models_dir):
    folder = tmp_path_factory.mktemp("docs")
    (folder / "ferry.md").write_text("# Harbour ferry\n\nThe ferry to the island leaves every hour from pier four; "
                                     "the last one sails at ten in the evening.\n", encoding="utf-8")
    (folder / "backup.md").write_text("# Backups\n\nThe file server takes a snapshot every hour and keeps hourly "
                                      "snapshots for two days.\n", encoding="utf-8")
    zh = tmp_path_factory.mktemp("zh")
    (zh / "茶.md").write_text("# 茶叶保存\n\n绿茶要放在密封罐里，避光、防潮，冰箱冷藏可以保存一年。\n", encoding="utf-8")
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, embedding={"cache_dir": str(shared_models_dir)})
    with KnowledgeBase.open("en", settings=settings) as base:
        base.ingest(folder)
    with KnowledgeBase.open("both", settings=settings) as base:
        base.ingest(folder)
        base.ingest(zh)
    return settings


def test_a_chinese_question_finds_english_by_dictionary(kb_home):
    with KnowledgeBase.open("en", settings=kb_home) as base:
        hits = base.search("每小时的快照保留多久？", k=2)
        assert hits[0].path.endswith("backup.md")
        assert "dictionary" in hits[0].ranks and "bm25" not in hits[0].ranks  # no Chinese word matched
        assert all("dictionary" not in h.ranks for h in base.search("每小时的快照保留多久？", k=2, mode="bm25"))
        off = Settings(**{**kb_home.model_dump(), "retrieval": {"dictionary_weight": 0}})
    with KnowledgeBase.open("en", settings=off) as base:
        assert all("dictionary" not in h.ranks for h in base.search("每小时的快照保留多久？", k=2))


def test_no_dictionary_within_one_language(kb_home):
    with KnowledgeBase.open("en", settings=kb_home) as base:  # English only: an English question has nothing to gain
        hits = base.search("How long are hourly snapshots kept?", k=2)
        assert hits[0].path.endswith("backup.md") and all("dictionary" not in h.ranks for h in hits)


def test_the_dictionary_ranking_never_lowers_a_same_language_hit(kb_home):
    with KnowledgeBase.open("both", settings=kb_home) as base:
        top = base.search("How long are hourly snapshots kept?", k=1)[0]
        off = Settings(**{**kb_home.model_dump(), "retrieval": {"dictionary_weight": 0}})
    with KnowledgeBase.open("both", settings=off) as base:
        plain = base.search("How long are hourly snapshots kept?", k=1)[0]
    assert top.chunk_id == plain.chunk_id and top.score >= plain.score
