"""Extractive answers: the sentences and table rows of the retrieved passages that best answer the
question, quoted with their [n] markers, no chat model involved.

Each numbered passage is cut into units: sentences (ended by 。！？；.!? or a line break) and table
rows (kb stores a table as a header line and row lines of cells separated by " | "; a row is shown as
"header: cell" pairs so that it reads on its own). A unit scores by
  - the question's key terms it holds, each weighted by how rare it is among the units (IDF), with the
    passage's section title and a row's header counted as part of it;
  - the cosine similarity of its embedding to the question's (the KB's own embedder), which carries a
    question in one language to a passage in the other;
  - a little for the rank of its passage.
The best unit is always quoted; a few more follow when they score close to it. The answer is labelled,
in the question's language, as quoted from the documents; the quotes stay in the documents' language.
This module leaves out retrieval and refusal (kb/chain.py decides whether to answer at all).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kb.answer import Citation, Passage
from kb.citations import key_terms
from kb.lang import CJK, has_cjk
from kb.loop_guard import normalize

LABEL = {"en": "Quoted from your documents:", "zh": "以下摘自文档原文："}
MAX_QUOTES = 3
MAX_CHARS = 600  # quotes after the first stop once the answer is this long
CLOSE = 0.8  # a further quote must score at least this share of the best one (0.9: evidence cited 0.318 vs 0.325)
W_TERMS, W_MEANING, W_RANK = 0.5, 0.5, 0.1
HEADING_WEIGHT = 30  # a line this short without an end mark is a heading (a Chinese character weighs two)
MAX_UNIT = 400  # a "sentence" longer than this (a paragraph without end marks) is cut at commas

_SENTENCE_END = re.compile(r"(?<=[。！？；])|(?<=[.!?;])(?=\s)|\n+")
_COMMA = re.compile(r"(?<=[，,、])")
_CELL = " | "

Similarity = Callable[[list[str]], np.ndarray]  # texts -> cosine similarity of each to the question


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a passage."""

    n: int  # the passage's number
    text: str  # as quoted
    context: str  # extra words it is scored with (section title, a row's table header)


def units(passage: Passage) -> list[Unit]:
    """The passage's sentences and table rows, in document order."""
    section = passage.section.rsplit(" > ", 1)[-1] if passage.section else ""
    out: list[Unit] = []
    header: list[str] | None = None
    for line in passage.text.split("\n"):
        line = line.strip()
        if not line:
            header = None
            continue
        if _CELL in line:
            cells = [c.strip() for c in line.split(_CELL)]
            if header is None:
                header = cells
                continue
            out.append(Unit(passage.n, _row(header, cells) if len(cells) == len(header) else line,
                            section + " " + " ".join(header)))
            continue
        header = None
        if _is_heading(line):
            continue
        out.extend(Unit(passage.n, s, section) for s in _sentences(line))
    return out


def _is_heading(line: str) -> bool:
    """A short line without an end mark ("一、消防安全", "Retention"): a title, which answers nothing."""
    return line[-1] not in "。！？；：.!?;:)）" and len(line) + len(CJK.findall(line)) <= HEADING_WEIGHT


def _row(header: list[str], cells: list[str]) -> str:
    """'城市类别：一线城市 | 每晚住宿上限：600 元' / 'Data: Hourly snapshots | Kept for: 2 days' (no sentence
    mark between cells: a row is one quote)."""
    pair, sep = ("：" if any(has_cjk(h) for h in header) else ": "), " | "
    return sep.join(f"{h}{pair}{c}" if h else c for h, c in zip(header, cells, strict=True) if c)


def _sentences(line: str) -> list[str]:
    out = []
    for s in (p.strip() for p in _SENTENCE_END.split(line)):
        if not s:
            continue
        if len(s) <= MAX_UNIT:
            out.append(s)
            continue
        part = ""
        for piece in _COMMA.split(s):
            if part and len(part) + len(piece) > MAX_UNIT:
                out.append(part.strip())
                part = ""
            part += piece
        if part.strip():
            out.append(part.strip())
    return [s for s in out if re.search(r"[^\W_]", s)]


def score_units(question: str, found: list[Unit], similarity: Similarity | None,
                ranks: dict[int, int]) -> list[float]:
    """The score of each unit (see the module docstring); higher is better."""
    q_terms = key_terms(question)
    unit_terms = [key_terms(u.text + " " + u.context) for u in found]
    n = len(found)
    idf = {t: math.log(1 + n / (0.5 + sum(1 for ts in unit_terms if t in ts))) for t in q_terms}
    total = sum(idf.values()) or 1.0
    lexical = [sum(idf[t] for t in q_terms & ts) / total for ts in unit_terms]
    meaning = [0.0] * n
    if similarity is not None and n:
        sims = similarity([u.text for u in found])
        low, high = float(sims.min()), float(sims.max())
        meaning = [(float(s) - low) / (high - low) if high > low else 1.0 for s in sims]
    return [W_TERMS * lex + W_MEANING * sem + W_RANK / ranks[u.n]
            for u, lex, sem in zip(found, lexical, meaning, strict=True)]


def choose(found: list[Unit], scores: list[float]) -> list[Unit]:
    """The best unit, then up to MAX_QUOTES - 1 more that score close to it (best first, no duplicates)."""
    order = sorted(range(len(found)), key=lambda i: -scores[i])
    chosen: list[Unit] = []
    seen: set[str] = set()
    length = 0
    for i in order:
        u = found[i]
        if chosen and (scores[i] < CLOSE * scores[order[0]] or len(chosen) >= MAX_QUOTES
                       or length + len(u.text) > MAX_CHARS):
            break
        key = normalize(u.text)  # the same sentence in two passages (or documents) is quoted once
        if key in seen:
            continue
        chosen.append(u)
        seen.add(key)
        length += len(u.text)
    return chosen


def extract(question: str, passages: list[Passage], lang: str,
            similarity: Similarity | None = None) -> tuple[str, tuple[Citation, ...]]:
    """The quoted answer (label, then one line per quote with its [n]) and its citations."""
    found = [u for p in passages for u in units(p)]
    if not found:
        return "", ()
    ranks = {p.n: rank for rank, p in enumerate(sorted(passages, key=lambda p: -p.score), 1)}
    chosen = choose(found, score_units(question, found, similarity, ranks))
    by_number = {p.n: p for p in passages}
    lines = [LABEL[lang]] + [f"- {u.text} [{u.n}]" for u in chosen]
    citations = tuple(Citation(n=u.n, path=by_number[u.n].path, page=by_number[u.n].page,
                               section=by_number[u.n].section, text=by_number[u.n].text, sentence=u.text,
                               overlap=1.0) for u in chosen)
    return "\n".join(lines), citations
