"""`kb eval` metrics against hand-computed answers, and the question-file checks."""

from __future__ import annotations

import json

import pytest

from kb.errors import KBError
from kb.eval import (
    AnswerOutcome,
    Outcome,
    Question,
    answer_summary,
    first_hit_rank,
    holds_evidence,
    load_questions,
    metrics,
    percentile,
    summarize,
)


def _o(group, rank, ms):
    return Outcome(Question(f"{group}-x", "q", ("e",), group=group), rank, ms / 1000)


def test_metrics_by_hand():
    outs = [_o("en", 1, 10), _o("en", 3, 20), _o("zh", None, 30), _o("zh", 7, 40)]
    m = metrics(outs)
    assert m["hit@1"] == 0.25 and m["hit@5"] == 0.5 and m["hit@10"] == 0.75
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4, abs=1e-4)
    assert m["p50_ms"] == 20 and m["p95_ms"] == 40
    s = summarize(outs)
    assert s["groups"]["en"]["hit@1"] == 0.5 and s["groups"]["zh"]["hit@10"] == 0.5
    assert s["misses"] == ["zh-x", "zh-x"]


def test_percentile_nearest_rank():
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10


def test_evidence_matching_collapses_whitespace():
    texts = ["nothing here", "the  quick\nbrown\tfox jumps"]
    assert first_hit_rank(texts, ("quick brown fox",)) == 2
    assert first_hit_rank(texts, ("lazy dog",)) is None


def test_evidence_in_the_answer_text_is_counted_per_group():
    # what a reader sees: the evidence sentence quoted in the answer, whatever the answer cites
    assert holds_evidence("Quoted:\n- Hourly snapshots are kept\n  for two days. [1]", ("kept for two days",))
    assert not holds_evidence("Quoted:\n- Snapshots run hourly. [1]", ("kept for two days",))
    assert not holds_evidence("anything", ())

    def outcome(group, in_text, cited, answerable=True):
        q = Question(f"{group}-x", "q", ("e",) if answerable else (), group=group, answerable=answerable)
        return AnswerOutcome(q, "answered", 1, cited, None, 0.1, 0.2, evidence_in_text=in_text)

    data = answer_summary([outcome("en", True, 1), outcome("en", False, 1), outcome("en", False, 0),
                           outcome("zh-en", True, 0), outcome("en", False, 0, answerable=False)])
    assert data["groups"]["en"]["evidence_in_answer"] == pytest.approx(1 / 3, abs=1e-4)
    assert data["groups"]["en"]["evidence_cited"] == pytest.approx(2 / 3, abs=1e-4)
    assert data["groups"]["zh-en"]["evidence_in_answer"] == 1.0  # quoted, though the citation holds none
    assert data["overall"]["evidence_in_answer"] == 0.5  # unanswerable questions are left out


def test_load_questions_groups_and_errors(tmp_path):
    good = tmp_path / "qa.jsonl"
    good.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "zh-001", "question": "网络怎么配", "evidence": ["a  b"], "lang": "zh"},
        {"id": "en-002", "question": "how?", "evidence": ["c"]},
        {"id": "none-001", "question": "unanswerable?", "evidence": [], "answerable": False},
    ]))
    qs = load_questions(good)
    assert [q.group for q in qs] == ["zh", "en", "none"]
    assert qs[0].evidence == ("a b",) and qs[2].answerable is False
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "evidence": []}\n{"id": "a", "question": "q2"}\n')
    with pytest.raises(KBError, match="line 2: duplicate id 'a'"):
        load_questions(bad)
    bad.write_text('{"id": "a", "question": "q", "evidence": "not a list"}\n')
    with pytest.raises(KBError, match="line 1: 'evidence' must be a list"):
        load_questions(bad)


def test_eval_end_to_end(settings, tmp_path):
    from kb import KnowledgeBase
    from kb.eval import run_retrieval

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Kiln\n\nThe pottery kiln reaches 1280 degrees for stoneware glaze firing.\n")
    (folder / "b.md").write_text("# Loom\n\nThe weaving loom uses a flying shuttle for wide cloth.\n")
    base = KnowledgeBase.open("ev", settings=settings)
    base.ingest(folder)
    qs = [Question("en-1", "how hot does the kiln get", ("reaches 1280 degrees",), group="en"),
          Question("en-2", "what device speeds up weaving", ("flying shuttle",), group="en"),
          Question("none-1", "who painted the ceiling", (), group="none", answerable=False)]
    outs = run_retrieval(base, qs, "hybrid", k=2)
    assert [o.rank for o in outs] == [1, 1]  # the unanswerable question is not searched
    assert summarize(outs)["overall"]["hit@1"] == 1.0
