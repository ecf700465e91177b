"""`kb eval`: retrieval quality on a question file.

Each line of the file is a JSON object:
    {"id": "zh-001", "question": "...", "evidence": ["exact substring", ...], "answer_keywords": [...],
     "lang": "zh", "answerable": true}
A retrieved passage is a hit when it contains any evidence string, both sides whitespace-collapsed.
Reported: hit@1, hit@5, hit@10 and MRR@10, overall and per group (the `lang` field, else the id's
prefix before the first '-'), and p50/p95 search latency. Questions without evidence (unanswerable
ones) are counted but left out of the retrieval metrics.

`--answers` asks every question through the answer chain instead (with `--answer-mode` generate,
extract or auto, or several side by side) and reports, overall and per group: the share of answerable
questions whose answer cites a passage holding an evidence string, the share whose answer text itself holds
one (both whitespace-collapsed: what a reader sees, not only where it points), citation precision (the share of
cited passages that hold one), answer keyword recall, the loop rate (answers that repeat a sentence) and
how often the loop guard had to stop the model, language match (the answer's own words, without an
extracted answer's label, are in the question's language), the refusal rate on unanswerable questions
(`"answerable": false`) and on answerable ones, and time to first token / total.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb.answer.citations import MARKER, split_sentences
from kb.answer.loop_guard import SENTENCE_WEIGHT, normalize
from kb.errors import KBError
from kb.text.lang import language, weight

CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    evidence: tuple[str, ...]
    answer_keywords: tuple[str, ...] = ()
    group: str = ""
    answerable: bool = True


@dataclass
class Outcome:
    question: Question
    rank: int | None  # 1-based rank of the first passage holding evidence, None if not in the top k
    seconds: float
    paths: list[str] = field(default_factory=list)


def collapse(text: str) -> str:
    return " ".join(text.split())


def load_questions(path: Path) -> list[Question]:
    """Read a question file; a malformed line is an error naming the line and the field."""
    questions: list[Question] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise KBError(f"cannot read question file {path}: {e.strerror or e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise KBError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise KBError(f"{where}: expected a JSON object")
        qid, text = row.get("id"), row.get("question")
        if not isinstance(qid, str) or not qid or not isinstance(text, str) or not text.strip():
            raise KBError(f"{where}: needs a non-empty string 'id' and 'question'")
        if qid in seen:
            raise KBError(f"{where}: duplicate id '{qid}'")
        seen.add(qid)
        evidence = row.get("evidence", [])
        if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            raise KBError(f"{where}: 'evidence' must be a list of strings")
        keywords = row.get("answer_keywords", [])
        group = row.get("lang") or qid.split("-", 1)[0]
        answerable = bool(row.get("answerable", bool(evidence)))
        questions.append(Question(qid, text, tuple(collapse(e) for e in evidence if e.strip()),
                                  tuple(keywords), str(group), answerable))
    if not questions:
        raise KBError(f"{path} holds no questions")
    return questions


def first_hit_rank(texts: list[str], evidence: tuple[str, ...]) -> int | None:
    for rank, text in enumerate(texts, 1):
        flat = collapse(text)
        if any(e in flat for e in evidence):
            return rank
    return None


def run_retrieval(base, questions: list[Question], mode: str | None = None, k: int = 10,
                  translations: dict[str, str] | None = None) -> list[Outcome]:
    """Search every answerable question once; time each search. `translations` (question id -> the
    question in the other language) are searched too and fused, as answer.translate_query does."""
    outcomes = []
    for q in questions:
        if not q.evidence:
            continue
        also = [translations[q.id]] if translations and q.id in translations else None
        start = time.perf_counter()
        hits = base.search(q.question, k=k, mode=mode, also=also)
        seconds = time.perf_counter() - start
        outcomes.append(Outcome(q, first_hit_rank([h.text for h in hits], q.evidence), seconds,
                                [h.path for h in hits]))
    return outcomes


def metrics(outcomes: list[Outcome]) -> dict[str, Any]:
    """hit@1/5/10, MRR@10, latency percentiles, for one list of outcomes."""
    n = len(outcomes)
    if n == 0:
        return {"questions": 0}
    out: dict[str, Any] = {"questions": n}
    for c in CUTOFFS:
        out[f"hit@{c}"] = round(sum(1 for o in outcomes if o.rank is not None and o.rank <= c) / n, 4)
    out["mrr@10"] = round(sum(1 / o.rank for o in outcomes if o.rank is not None and o.rank <= 10) / n, 4)
    times = sorted(o.seconds * 1000 for o in outcomes)
    out["p50_ms"] = round(percentile(times, 50), 2)
    out["p95_ms"] = round(percentile(times, 95), 2)
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.question.group, []).append(o)
    return {"overall": metrics(outcomes), "groups": {g: metrics(v) for g, v in sorted(groups.items())},
            "misses": [o.question.id for o in outcomes if o.rank is None or o.rank > 5]}


# -- answer-level metrics (`kb eval --answers`) ---------------------------------------------------
@dataclass
class AnswerOutcome:
    question: Question
    status: str  # Answer.status
    cited: int  # distinct passages the answer cites
    cited_with_evidence: int  # ... of which hold an evidence string
    keyword_recall: float | None  # share of answer_keywords found in the answer text
    first_token: float | None
    total: float
    answer_mode: str = "generate"  # Answer.answer_mode: generate or extract
    looped: bool = False  # the answer as shown repeats a sentence
    guard_stopped: bool = False  # the loop guard had to stop the model (Answer.repetition_stopped)
    language_match: bool | None = None  # the answer is written in the question's language (None: no answer)
    evidence_in_text: bool = False  # the answer's text holds an evidence string (whitespace collapsed)


def repeats_a_sentence(text: str, quoted: bool = False) -> bool:
    """Whether any sentence of `text` (markers, case and punctuation aside) occurs twice; for a `quoted`
    (extracted) answer, any of its quoted lines (a table row's cells may hold sentence marks)."""
    seen: set[str] = set()
    for sentence in (text.splitlines() if quoted else split_sentences(text)):
        key = normalize(sentence)
        if weight(key) < SENTENCE_WEIGHT:
            continue
        if key in seen:
            return True
        seen.add(key)
    return False


def answer_body(answer) -> str:
    """The answer's own words: an extracted answer without its label line, markers removed."""
    text = answer.text
    if answer.answer_mode == "extract":
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return MARKER.sub("", text)


def holds_evidence(text: str, evidence: tuple[str, ...]) -> bool:
    """Whether any evidence string (already whitespace-collapsed) occurs in the text, whitespace collapsed."""
    flat = collapse(text)
    return any(e in flat for e in evidence)


def run_answers(base, questions: list[Question], limit: int | None = None,
                answer_mode: str | None = None) -> list[AnswerOutcome]:
    """Ask every question (the first `limit` answerable ones and all unanswerable ones when limited);
    `answer_mode` overrides answer.mode (generate, extract, auto)."""
    if limit is not None:
        answerable = [q for q in questions if q.answerable][:limit]
        questions = answerable + [q for q in questions if not q.answerable]
    outcomes = []
    for q in questions:
        a = base.ask(q.question, **({"answer_mode": answer_mode} if answer_mode else {}))
        cited = a.cited_passages
        with_evidence = sum(1 for p in cited if holds_evidence(p.text, q.evidence))
        recall = None
        if q.answer_keywords:
            text = a.text.lower()
            recall = sum(1 for k in q.answer_keywords if k.lower() in text) / len(q.answer_keywords)
        body = answer_body(a)
        matched = None if a.refused or not body.strip() else language(body) == language(q.question)
        outcomes.append(AnswerOutcome(q, a.status, len(cited), with_evidence, recall, a.timings.first_token,
                                      a.timings.total, a.answer_mode, repeats_a_sentence(a.text, a.answer_mode == "extract"),
                                      a.repetition_stopped, matched, holds_evidence(a.text, q.evidence)))
    return outcomes


def answer_metrics(outcomes: list[AnswerOutcome]) -> dict[str, Any]:
    """Evidence cited and in the answer's text, citation precision, keyword recall, loops, language match,
    refusal rates, timings."""
    yes = [o for o in outcomes if o.question.answerable]
    no = [o for o in outcomes if not o.question.answerable]
    refused = ("refused", "not_found")
    cited = sum(o.cited for o in yes)
    recalls = [o.keyword_recall for o in yes if o.keyword_recall is not None]
    firsts = sorted(o.first_token for o in outcomes if o.first_token is not None)
    totals = sorted(o.total for o in outcomes if o.first_token is not None)
    said = [o for o in outcomes if o.language_match is not None]

    def share(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    return {
        "answerable": len(yes), "unanswerable": len(no),
        "evidence_cited": share(sum(1 for o in yes if o.cited_with_evidence), len(yes)),
        "evidence_in_answer": share(sum(1 for o in yes if o.evidence_in_text), len(yes)),
        "citation_precision": share(sum(o.cited_with_evidence for o in yes), cited),
        "answers_with_citations": share(sum(1 for o in yes if o.cited), len(yes)),
        "keyword_recall": round(sum(recalls) / len(recalls), 4) if recalls else None,
        "loop_rate": share(sum(1 for o in outcomes if o.looped), len(outcomes)),
        "guard_stop_rate": share(sum(1 for o in outcomes if o.guard_stopped), len(outcomes)),
        "language_match": share(sum(1 for o in said if o.language_match), len(said)),
        "extracted": share(sum(1 for o in outcomes if o.answer_mode == "extract" and o.status != "refused"),
                           len(outcomes)),
        "refusal_rate_unanswerable": share(sum(1 for o in no if o.status in refused), len(no)),
        "refusal_rate_answerable": share(sum(1 for o in yes if o.status in refused), len(yes)),
        "first_token_p50_s": round(percentile(firsts, 50), 3) if firsts else None,
        "first_token_p95_s": round(percentile(firsts, 95), 3) if firsts else None,
        "total_p50_s": round(percentile(totals, 50), 3) if totals else None,
        "total_p95_s": round(percentile(totals, 95), 3) if totals else None,
        "status": {s: sum(1 for o in outcomes if o.status == s) for s in ("answered", "refused", "not_found", "general")},
    }


def answer_summary(outcomes: list[AnswerOutcome]) -> dict[str, Any]:
    """answer_metrics overall and per group (the questions' `lang`, e.g. en, zh, zh-en)."""
    groups: dict[str, list[AnswerOutcome]] = {}
    for o in outcomes:
        groups.setdefault(o.question.group, []).append(o)
    return {"overall": answer_metrics(outcomes), "groups": {g: answer_metrics(v) for g, v in sorted(groups.items())}}
