"""The ensemble of embedders: settings, what each model indexes, fusion by how much of the query it reads, KBs
that keep the set they were built with, and the rebuild that moves them to the configured one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from kb import KnowledgeBase
from kb.config import DEFAULT_EMBEDDER, MINILM_EMBEDDER, Settings
from kb.stores.manifest import models

MINILM_RANKING = f"dense:{MINILM_EMBEDDER}"


def test_models_is_the_list_and_model_alone_means_one():
    assert Settings().embedding.models == [DEFAULT_EMBEDDER, MINILM_EMBEDDER]
    assert Settings().embedding.ensemble == [MINILM_EMBEDDER]
    alone = Settings(embedding={"model": MINILM_EMBEDDER}).embedding
    assert alone.models == [MINILM_EMBEDDER] and alone.ensemble == []
    listed = Settings(embedding={"models": f"{MINILM_EMBEDDER}, {DEFAULT_EMBEDDER}"}).embedding  # as KB_* gives it
    assert listed.model == MINILM_EMBEDDER and listed.ensemble == [DEFAULT_EMBEDDER]
    with pytest.raises(ValidationError, match="is not the first of embedding.models"):
        Settings(embedding={"model": MINILM_EMBEDDER, "models": [DEFAULT_EMBEDDER, MINILM_EMBEDDER]})
    with pytest.raises(ValidationError):
        Settings(embedding={"models": []})


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notes")
    (folder / "ferry.md").write_text("# Harbour ferry\n\nThe ferry to the island leaves every hour from pier four; "
                                     "the last one sails at ten in the evening.\n", encoding="utf-8")
    (folder / "bees.md").write_text("# Bees\n\nA hive is opened in spring to check the queen and the honey "
                                    "stores. Smoke calms the bees.\n", encoding="utf-8")
    (folder / "茶.md").write_text("# 茶叶保存\n\n绿茶要放在密封罐里，避光、防潮，冰箱冷藏可以保存一年。\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def ensemble_kb(tmp_path_factory, notes, shared_models_dir):
    home = tmp_path_factory.mktemp("home")
    base = KnowledgeBase.open("both", settings=Settings(home=home, embedding={"cache_dir": str(shared_models_dir)}))
    base.ingest(notes)
    yield base
    base.close()


def _side_vectors(base) -> dict[str, int]:
    """model -> how many chunks it has vectors of, read from the KB's database."""
    db = sqlite3.connect(f"file:{Path(base.stats()['path']) / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT model, COUNT(*) FROM ensemble_vectors GROUP BY model").fetchall())
    finally:
        db.close()


def test_each_model_indexes_what_it_reads(ensemble_kb):
    manifest = json.loads((Path(ensemble_kb.stats()["path"]) / "manifest.json").read_text(encoding="utf-8"))
    assert models(manifest) == [DEFAULT_EMBEDDER, MINILM_EMBEDDER]
    assert ensemble_kb.stats()["embedders"] == [DEFAULT_EMBEDDER, MINILM_EMBEDDER]
    english = sum(d.chunks for d in ensemble_kb.documents() if not d.path.endswith("茶.md"))
    assert _side_vectors(ensemble_kb) == {MINILM_EMBEDDER: english}  # MiniLM skips the Chinese note


def test_rankings_are_fused_by_what_each_model_reads(ensemble_kb):
    top = ensemble_kb.search("When does the last boat to the island leave?", k=1)[0]
    assert top.path.endswith("ferry.md")
    assert {"dense", MINILM_RANKING} <= set(top.ranks)  # both embedders ranked it
    dense = ensemble_kb.search("When does the last boat to the island leave?", k=1, mode="dense")[0]
    assert dense.path.endswith("ferry.md") and MINILM_RANKING in dense.ranks
    # A Chinese question: MiniLM reads none of it, so its ranking weighs nothing and e5 decides alone.
    zh = ensemble_kb.search("绿茶怎么存放？", k=3, mode="dense")
    assert zh[0].path.endswith("茶.md")
    alone = ensemble_kb.search("绿茶怎么存放？", k=1, mode="dense")[0].score
    assert 0 < alone <= 1 and zh[0].score == alone  # the e5 cosine, not a fused score


def test_an_ensemble_member_defers_to_the_main_model_on_what_it_cannot_read(ensemble_kb):
    # The answer is only in Chinese: MiniLM never indexed it, so its ranking takes e5's rank for it instead of
    # voting for the English notes, in hybrid and in dense mode.
    for mode in ("hybrid", "dense"):
        top = ensemble_kb.search("How should green tea be stored?", k=1, mode=mode)[0]
        assert top.path.endswith("茶.md") and top.ranks[MINILM_RANKING] == top.ranks["dense"]


def test_removing_a_document_removes_its_vectors_everywhere(tmp_path, notes, settings):
    folder = tmp_path / "docs"
    folder.mkdir()
    for p in notes.iterdir():
        (folder / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    with KnowledgeBase.open("rm", settings=settings) as base:
        base.ingest(folder)
        before = _side_vectors(base)[MINILM_EMBEDDER]
        base.remove(folder / "bees.md")
        assert _side_vectors(base)[MINILM_EMBEDDER] == before - 1
        assert all(not h.path.endswith("bees.md") for h in base.search("smoke calms the hive", k=5, mode="dense"))


def test_a_kb_of_one_embedder_keeps_it_until_a_rebuild(tmp_path, notes, settings):
    one = Settings(home=settings.home, embedding={"models": [DEFAULT_EMBEDDER]})
    with KnowledgeBase.open("old", settings=one) as base:
        base.ingest(notes)
        assert "ensemble" not in base.manifest
    with KnowledgeBase.open("old", settings=Settings(home=settings.home)) as base:  # today's default: the ensemble
        hit = base.search("When does the last boat to the island leave?", k=1)[0]
        assert hit.path.endswith("ferry.md") and MINILM_RANKING not in hit.ranks
        report = base.ingest(notes)  # nothing changed: no rebuild by the back door
        assert report.chunks_added == 0 and "ensemble" not in base.manifest
        base.ingest(notes, rebuild=True)
        assert models(base.manifest) == [DEFAULT_EMBEDDER, MINILM_EMBEDDER]
        assert MINILM_RANKING in base.search("When does the last boat to the island leave?", k=1)[0].ranks
