"""Marker parsing and verification against known answers (no model, no index)."""

from __future__ import annotations

from kb.answer.citations import split_sentences, verify
from kb.answer.types import Passage


def _passages() -> list[Passage]:
    texts = ["Hourly snapshots are kept for two days on the file server.",
             "Weekly full backups go to the tape library and are kept for twelve weeks.",
             "一线城市的住宿标准为每晚六百元。"]
    return [Passage(n=i, path=f"/docs/f{i}.md", title="", section=f"S{i}", page=i, text=t, score=1.0,
                    chunk_ids=(i,)) for i, t in enumerate(texts, 1)]


def test_every_marker_form_is_read_and_tied_to_its_sentence():
    v = verify("Snapshots stay two days [1]. Tapes keep backups twelve weeks [1, 2]. "
               "Both are kept. [2]\n一线城市每晚六百元【3】。住宿超标自理[^3]。", _passages())
    pairs = [(c.n, c.sentence) for c in v.citations]
    assert pairs == [(1, "Snapshots stay two days."), (1, "Tapes keep backups twelve weeks."),
                     (2, "Tapes keep backups twelve weeks."), (2, "Both are kept."),
                     (3, "一线城市每晚六百元。"), (3, "住宿超标自理。")]
    c = v.citations[0]
    assert (c.path, c.page, c.section) == ("/docs/f1.md", 1, "S1") and c.text.startswith("Hourly snapshots")
    assert not v.unsupported and not v.dropped and not any(c.inferred for c in v.citations)


def test_markers_pointing_nowhere_are_dropped_from_text_and_citations():
    v = verify("Snapshots stay two days [1][7]. Tapes are kept for weeks [0, 2]. Nothing here [9].", _passages())
    assert v.dropped == (7, 0, 9)
    assert "[7]" not in v.text and "[9]" not in v.text and "[0" not in v.text
    assert v.text.startswith("Snapshots stay two days [1]. Tapes are kept for weeks [2].")
    assert [c.n for c in v.citations] == [1, 2]
    assert v.unsupported == ("Nothing here.",)


def test_sentences_without_markers_are_inferred_only_when_the_passage_holds_them():
    v = verify("1. Hourly snapshots are kept for two days on the file server.\n"
               "2. The moon is made of cheese.", _passages())
    assert [(c.n, c.inferred, c.overlap) for c in v.citations] == [(1, True, 1.0)]
    assert v.unsupported == ("The moon is made of cheese.",)
    short = verify("Two days.\nHourly snapshots.", _passages())  # too few terms to attribute, however well they match
    assert not short.citations and short.unsupported == ("Two days.", "Hourly snapshots.")


def test_sentence_splitting_keeps_decimals_and_moves_trailing_markers_back():
    assert split_sentences("Python 3.11 is faster. [2] It was released in 2022!\n\n[3] Yes") == [
        "Python 3.11 is faster. [2]", "It was released in 2022! [3]", "Yes"]
