"""The bilingual default: language centring, KBs that keep their embedder, query translation, refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kb import KnowledgeBase
from kb.config import MINILM_EMBEDDER, Settings
from kb.errors import EmbedderMismatchError
from kb.llm.scripted import ScriptedBackend
from kb.stores.centring import MIN_CHUNKS, Centering, fit


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_centring_puts_meaning_before_language():
    # Two meanings (axes 0, 1) in two languages (offset on axis 2 / 3): raw cosine prefers the question's
    # own language even for the other meaning; centred, the same meaning wins across languages.
    rng = np.random.default_rng(0)
    en = [_unit([1, 0, 0, 2] + rng.normal(0, 0.05, 4)) for _ in range(MIN_CHUNKS)]
    zh = [_unit([0, 1, 2, 0] + rng.normal(0, 0.05, 4)) for _ in range(MIN_CHUNKS)]
    vectors = np.stack(en + zh)
    langs = ["en"] * MIN_CHUNKS + ["zh"] * MIN_CHUNKS
    question = _unit([1, 0, 2, 0])  # a Chinese question about meaning 0, which only English chunks hold
    assert langs[int(np.argmax(vectors @ question))] == "zh"
    centring = fit(vectors, langs)
    moved = centring.vectors(vectors, langs)
    assert langs[int(np.argmax(moved @ centring.query(question, "zh")))] == "en"
    assert np.allclose(np.linalg.norm(moved, axis=1), 1, atol=1e-5)
    again = Centering.from_json(centring.to_json())
    assert again.counts == {"en": MIN_CHUNKS, "zh": MIN_CHUNKS}
    assert np.allclose(again.means["zh"], centring.means["zh"], atol=1e-6)


def test_small_kbs_and_single_languages_are_not_centred_by_noise():
    few = np.eye(4, dtype=np.float32)
    none = fit(few, ["en", "zh", "en", "zh"])
    assert none.means == {} and np.array_equal(none.vectors(few, ["en"] * 4), few)
    assert none.counts == {"en": 2, "zh": 2}
    many = _unit(np.random.default_rng(1).normal(size=(MIN_CHUNKS + 5, 4)))
    english = fit(many, ["en"] * (MIN_CHUNKS + 4) + ["zh"])
    assert set(english.means) == {"all", "en"}  # one Chinese chunk gives no Chinese mean of its own
    assert np.array_equal(english.shift("zh"), english.means["all"])


def test_a_small_kb_is_centred_by_the_prior_language_offset():
    # Three chunks: too few for means of their own. The prior (the embedder's means over generic text in
    # each language) carries the language offset, so a Chinese question still finds the English chunk.
    prior = {"en": _unit([0, 0, 0, 1]), "zh": _unit([0, 0, 1, 0])}
    vectors = np.stack([_unit([1, 0, 0, 2]), _unit([0, 1, 2, 0]), _unit([0.2, 1, 2, 0])])
    langs = ["en", "zh", "zh"]
    centring = fit(vectors, langs, prior)
    assert set(centring.means) == {"all", "en", "zh"}
    assert np.allclose(centring.means["zh"] - centring.means["en"], prior["zh"] - prior["en"], atol=1e-6)
    question = _unit([1, 0, 2, 0])
    assert int(np.argmax(vectors @ question)) != 0
    assert int(np.argmax(centring.vectors(vectors, langs) @ centring.query(question, "zh"))) == 0


def test_the_prior_comes_from_kbs_reference_sentences():
    from kb.stores.centring import reference_means

    seen = []

    def encode(texts):
        seen.append(texts)
        return np.ones((len(texts), 3), dtype=np.float32)

    means = reference_means(encode)
    assert set(means) == {"en", "zh"} and len(seen[0]) == len(seen[1]) >= 100
    assert not any("\u4e00" <= ch <= "\u9fff" for t in seen[0] for ch in t)  # English side first


@pytest.fixture(scope="module")
def mixed_kb(tmp_path_factory, shared_models_dir):
    """English notes and Chinese notes, enough of each for the KB's own language means."""
    folder = tmp_path_factory.mktemp("mixed")
    topics_en = ["bread", "tides", "bees", "paint", "chess", "clocks", "moss", "kites"]
    topics_zh = ["茶叶", "书法", "剪纸", "瓷器", "丝绸", "灯笼", "风筝", "围棋"]
    for i in range(5):
        (folder / f"en{i}.md").write_text("".join(
            f"## {t} {j}\n\nNote {j} about {t}: how to care for it, what it costs and where to buy it.\n\n"
            for j, t in enumerate(topics_en)), encoding="utf-8")
        (folder / f"zh{i}.md").write_text("".join(
            f"## {t}{j}\n\n关于{t}的第{j}条笔记：如何保养、价格多少、在哪里购买。\n\n"
            for j, t in enumerate(topics_zh)), encoding="utf-8")
    (folder / "ferry.md").write_text("# Harbour ferry\n\nThe ferry to the island leaves every hour from pier "
                                     "four; the last one sails at ten in the evening.\n", encoding="utf-8")
    home = tmp_path_factory.mktemp("home")
    base = KnowledgeBase.open("mixed", settings=Settings(home=home, embedding={"cache_dir": str(shared_models_dir)}))
    base.ingest(folder)
    yield base
    base.close()


def test_a_chinese_question_finds_the_english_answer_by_meaning(mixed_kb):
    counts = mixed_kb.languages()
    assert counts["en"] >= MIN_CHUNKS and counts["zh"] >= MIN_CHUNKS
    top = mixed_kb.search("去岛上的船最晚几点开？", k=1, mode="dense")[0]
    assert top.path.endswith("ferry.md")


def test_a_kb_keeps_the_embedder_it_was_built_with(settings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Pump\n\nThe aquarium pump is descaled every ninety days.\n")
    old = Settings(home=settings.home, embedding={"model": MINILM_EMBEDDER})
    with KnowledgeBase.open("old", settings=old) as base:
        base.ingest(folder)
    with KnowledgeBase.open("old", settings=Settings(home=settings.home)) as base:  # today's default settings
        assert base.embedder().model_id == MINILM_EMBEDDER
        assert base.search("how often is the pump cleaned", k=1)[0].path.endswith("a.md")
        other = Settings(home=settings.home, embedding={"model": "intfloat/e5-base-v2"})
    with KnowledgeBase.open("old", settings=other) as base, \
            pytest.raises(EmbedderMismatchError, match="--rebuild"):
        base.embedder()
    with KnowledgeBase.open("old", settings=Settings(home=settings.home)) as base:
        base.ingest(folder, rebuild=True)  # moves the KB to the default embedder
        assert base.manifest["embedder"]["model"] == "multilingual-e5-small"
        assert base.manifest["embedder"]["query_prefix"] == "query: "
        assert base.search("水族箱的泵多久清洗一次", k=1)[0].path.endswith("a.md")


def _ask_with(base, backend, question, **answer):
    """The Answer with these answer settings, from `backend` (the chain asks for its model when it needs it)."""
    mode = answer.pop("mode", None)
    kb_settings = base.settings.answer
    base.settings.answer = kb_settings.model_copy(update=answer)
    try:
        return base.ask(question, backend=backend, answer_mode=mode)
    finally:
        base.settings.answer = kb_settings


def test_query_translation_searches_both_languages(mixed_kb):
    translator = ScriptedBackend(["When does the last ferry to the island leave?", "It sails at ten [1]."],
                                 languages=("en", "zh"))
    answer = _ask_with(mixed_kb, translator, "最后一班船几点？", min_similarity=0)
    assert answer.translation == "When does the last ferry to the island leave?"
    assert "Translate" in translator.calls[0][0].content and translator.calls[0][-1].content == "最后一班船几点？"
    assert answer.passages[0].path.endswith("ferry.md")


def test_translation_is_off_for_an_english_only_model_and_rejects_non_translations(mixed_kb):
    english_only = ScriptedBackend(["It sails at ten."])
    answer = _ask_with(mixed_kb, english_only, "最后一班船几点？", min_similarity=0, mode="generate")
    assert answer.translation is None and len(english_only.calls) == 1
    # in auto mode a model that cannot write Chinese is not asked at all: the answer is quoted
    quoted = _ask_with(mixed_kb, english_only, "最后一班船几点？", min_similarity=0)
    assert quoted.answer_mode == "extract" and len(english_only.calls) == 1
    assert "ten in the evening" in quoted.text and quoted.citations[0].path.endswith("ferry.md")
    echo = ScriptedBackend(["最后一班船几点？", "It sails at ten."], languages=("en", "zh"))
    assert _ask_with(mixed_kb, echo, "最后一班船几点？", min_similarity=0).translation is None


def test_translated_rankings_are_fused(mixed_kb):
    plain = mixed_kb.search("最后一班船几点？", k=5)
    both = mixed_kb.search("最后一班船几点？", k=5, also=["When does the last ferry leave?"])
    assert both[0].path.endswith("ferry.md") and {"dense@1", "bm25@1"} & set(both[0].ranks)
    assert [h.chunk_id for h in plain] != [h.chunk_id for h in both]


def test_refusal_uses_the_embedders_calibrated_threshold(mixed_kb):
    replies = ScriptedBackend(["The ferry leaves every hour [1]."])
    off_topic = _ask_with(mixed_kb, replies, "How many moons does Jupiter have?")
    assert off_topic.status == "refused" and not replies.calls
    on_topic = _ask_with(mixed_kb, replies, "How often does the ferry to the island leave?")
    assert on_topic.status == "answered"
    refuse_zh = _ask_with(mixed_kb, ScriptedBackend(["x"]), "木星有多少颗卫星？")
    assert refuse_zh.status == "refused"
    assert json.loads(json.dumps(on_topic.to_dict()))["translation"] is None
