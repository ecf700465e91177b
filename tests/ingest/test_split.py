"""Chunking: sentence ends in both languages, token budgets, headings, tables, offsets."""

from __future__ import annotations

from kb.ingest.split import split_document
from kb.types import Element


def count_chars(texts):  # 1 token per non-space character: easy to reason about by hand
    return [len("".join(t.split())) for t in texts]


def test_chinese_sentences_are_split_at_sentence_ends():
    text = "第一句话很短。第二句话也不长！第三句是问题吗？第四句用分号；第五句结束。"
    doc, drafts = split_document([Element(text)], count_chars, max_tokens=18, overlap_tokens=0)
    assert [d.text for d in drafts] == ["第一句话很短。第二句话也不长！", "第三句是问题吗？第四句用分号；", "第五句结束。"]


def test_english_sentences_and_overlap():
    text = "Alpha one. Beta two. Gamma three. Delta four."
    _, drafts = split_document([Element(text)], count_chars, max_tokens=24, overlap_tokens=11)
    assert [d.text for d in drafts] == ["Alpha one. Beta two.", "Beta two. Gamma three.", "Gamma three. Delta four."]


def test_chunks_never_cross_headings_or_pages_and_offsets_slice_the_text():
    els = [
        Element("Intro", "title", depth=0), Element("Some words here.", page=1),
        Element("Part A", "title", depth=1), Element("Text of part A.", page=1), Element("More of A.", page=2),
        Element("Part B", "title", depth=1), Element("Text of part B.", page=2),
    ]
    doc, drafts = split_document(els, count_chars, max_tokens=200, overlap_tokens=0)
    assert [(d.section, d.page, d.text) for d in drafts] == [
        ("Intro", 1, "Some words here."),
        ("Intro > Part A", 1, "Text of part A."),
        ("Intro > Part A", 2, "More of A."),
        ("Intro > Part B", 2, "Text of part B."),
    ]
    for d in drafts:
        assert doc[d.char_start:d.char_end] == d.text


def test_every_chunk_fits_the_budget_including_its_heading():
    sentence = "Lorem ipsum dolor sit amet consectetur. "
    els = [Element("Heading", "title"), Element(sentence * 40)]
    _, drafts = split_document(els, count_chars, max_tokens=100, overlap_tokens=20)
    assert len(drafts) > 5
    for d in drafts:
        assert count_chars([d.text])[0] + count_chars(["Heading"])[0] <= 100


def test_overlong_sentence_is_cut_at_spaces():
    words = " ".join(f"word{i}" for i in range(200))  # no sentence end at all
    _, drafts = split_document([Element(words)], count_chars, max_tokens=100, overlap_tokens=0)
    assert len(drafts) > 1
    assert " ".join(d.text for d in drafts).split() == words.split()


def test_table_split_by_rows_repeats_header():
    rows = (("name", "value"),) + tuple((f"row{i}", str(i)) for i in range(30))
    _, drafts = split_document([Element("", "table", rows=rows)], count_chars, max_tokens=60, overlap_tokens=10)
    assert len(drafts) > 2
    seen = []
    for d in drafts:
        lines = d.text.splitlines()
        assert lines[0] == "name | value"
        seen.extend(lines[1:])
    assert seen == [f"row{i} | {i}" for i in range(30)]  # every row once, in order, no overlap


def test_title_without_body_is_kept_as_text():
    els = [Element("Only a line that a parser took for a title", "title")]
    _, drafts = split_document(els, count_chars, max_tokens=100, overlap_tokens=0)
    assert [d.text for d in drafts] == ["Only a line that a parser took for a title"]
