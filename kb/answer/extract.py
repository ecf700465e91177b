"""Extractive answers: the sentences and table rows of the retrieved passages that best answer the
question, quoted with their [n] markers, no chat model involved.

Each numbered passage is cut into units: sentences (ended by 。！？；.!? or a line break) and table
rows (kb stores a table as a header line and row lines of cells separated by " | "; a row is shown as
"header: cell" pairs so that it reads on its own). A unit scores by
  - the question's key terms it holds, each weighted by how rare it is in the whole KB (its IDF in the
    keyword index, Retriever.term_rarity; among the candidate units where the store cannot tell), with
    the passage's section title, the heading above the unit and a row's header counted as part of it;
  - the cosine similarity of its embedding to the question's in the KB's language-centred space (the
    KB's own embedder), averaged with that of the units just before and after it, since a sentence often
    answers only with its neighbours. A unit in another language than the question's can share no terms
    with it: its meaning stands in for its terms;
  - a little for the rank of its passage.
The best unit is quoted with the sentences around it in its paragraph, as the passage writes them (an
answer cut at a ';', or a short fragment, reads whole); up to two more follow, the same way, when they
score close to it. On the dev set (questions whose evidence was retrieved, the same passages) the quotes
held an evidence string for 16/25 English questions (5 with single best sentences and IDF over the
candidates), 18/29 Chinese (19), 13/18 zh->en (5) and 6/9 en->zh (1). Embedding each unit again with its
neighbours and heading scored no better (17, 20, 11, 6 for the best twelve) at 3x the time, so it is not done.
The answer is labelled, in the question's language, as quoted from the documents; the quotes stay in the
documents' language. This module leaves out retrieval and refusal (kb/answer/chain.py decides whether to answer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kb.answer.citations import key_terms
from kb.answer.loop_guard import normalize
from kb.answer.types import Citation, Passage
from kb.text.lang import has_cjk, language, weight
from kb.text.sentences import ENDS_A_LINE, SENTENCE_BREAK

LABEL = {"en": "Quoted from your documents:", "zh": "以下摘自文档原文："}
MAX_QUOTES = 3
MAX_CHARS = 600  # quotes after the first stop once the answer is this long
CLOSE = 0.7  # a further quote must score at least this share of the best one (dev set: 0.8 quoted the
# evidence for 3 fewer of 81 questions whose evidence was retrieved, 0.6 for as many)
W_TERMS, W_MEANING, W_RANK = 0.25, 0.5, 0.1
HEADING_WEIGHT = 30  # a line this short without an end mark is a heading (a Chinese character weighs two)
MAX_UNIT = 400  # a "sentence" longer than this (a paragraph without end marks) is cut at commas

_COMMA = re.compile(r"(?<=[，,、])")
_CELL = " | "

Similarity = Callable[[list[str]], np.ndarray]  # texts -> cosine similarity of each to the question
Rarity = Callable[[list[str]], dict[str, float]]  # key terms -> their IDF in the KB ({}: unknown)


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a passage."""

    n: int  # the passage's number
    text: str  # as quoted
    context: str  # extra words it is scored with (section title, the heading above it, a row's table header)
    start: int = -1  # a sentence's place in its passage's text; -1 for a table row (rebuilt from its cells)
    end: int = -1
    paragraph: int = 0  # which paragraph of the passage it is in (a blank line or a heading starts the next)


def units(passage: Passage) -> list[Unit]:
    """The passage's sentences and table rows, in document order."""
    section = passage.section.rsplit(" > ", 1)[-1] if passage.section else ""
    out: list[Unit] = []
    header: list[str] | None = None
    heading = ""
    at = paragraph = 0
    for raw in passage.text.split("\n"):
        offset, at = at + len(raw) - len(raw.lstrip()), at + len(raw) + 1
        line = raw.strip()
        if not line:
            header = None
            paragraph += 1
            continue
        context = " ".join(dict.fromkeys(w for w in (section, heading) if w))
        if _CELL in line:
            cells = [c.strip() for c in line.split(_CELL)]
            if header is None:
                header = cells
                continue
            out.append(Unit(passage.n, _row(header, cells) if len(cells) == len(header) else line,
                            context + " " + " ".join(header)))
            continue
        header = None
        if _is_heading(line):
            heading = line
            paragraph += 1
            continue
        cursor = 0
        for s in _sentences(line):
            cursor = line.find(s, cursor)
            out.append(Unit(passage.n, s, context, offset + cursor, offset + cursor + len(s), paragraph))
            cursor += len(s)
    return out


def _is_heading(line: str) -> bool:
    """A short line without an end mark ("一、消防安全", "Retention"): a title, which answers nothing."""
    return not ENDS_A_LINE.search(line) and line[-1] not in ")）" and weight(line) <= HEADING_WEIGHT


def _row(header: list[str], cells: list[str]) -> str:
    """'城市类别：一线城市 | 每晚住宿上限：600 元' / 'Data: Hourly snapshots | Kept for: 2 days' (no sentence
    mark between cells: a row is one quote)."""
    pair, sep = ("：" if any(has_cjk(h) for h in header) else ": "), " | "
    return sep.join(f"{h}{pair}{c}" if h else c for h, c in zip(header, cells, strict=True) if c)


def _sentences(line: str) -> list[str]:
    out = []
    for s in (p.strip() for p in SENTENCE_BREAK.split(line)):
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
                ranks: dict[int, int], rarity: Rarity | None = None) -> list[float]:
    """The score of each unit (see the module docstring); higher is better."""
    terms = _lexical(question, found, rarity)
    meaning = [0.0] * len(found)
    if similarity is not None and found:
        sims = similarity([u.text for u in found])
        low, high = float(sims.min()), float(sims.max())  # e5's cosines crowd into a narrow band: spread them
        own = [(float(s) - low) / (high - low) if high > low else 1.0 for s in sims]
        meaning = [sum(own[j] for j in _around(found, i)) / len(_around(found, i)) for i in range(len(found))]
        q_lang = language(question)
        other = [language(u.text) != q_lang for u in found]
        # A unit in the other language has no term to share, so meaning stands in for terms, but no higher than
        # the best term share of a unit in the question's own language. Dev set (kb eval --answers, auto), evidence
        # in answer zh->en / en->zh and language match en / zh: meaning alone 0.265 / 0.333 and 0.84 / 0.83
        # (Chinese quotes in answers to English questions with English evidence); never when an own-language
        # unit shares a term 0.163 / 0.278 and 0.97 / 0.97; capped, as here, 0.204 / 0.333 and 0.92 / 0.95.
        own_best = max((t for t, o in zip(terms, other, strict=True) if not o), default=0.0)
        terms = [max(t, min(m, own_best) if own_best > 0 else m) if o else t
                 for t, m, o in zip(terms, meaning, other, strict=True)]
    return [W_TERMS * t + W_MEANING * m + W_RANK / ranks[u.n] for u, t, m in zip(found, terms, meaning, strict=True)]


def _lexical(question: str, found: list[Unit], rarity: Rarity | None) -> list[float]:
    """The IDF-weighted share of the question's key terms each unit (with its context) holds."""
    q_terms = key_terms(question)
    unit_terms = [key_terms(u.text + " " + u.context) for u in found]
    known = rarity(sorted(q_terms)) if rarity is not None and q_terms else {}
    n = len(found)
    idf = {t: known[t] if t in known else math.log(1 + n / (0.5 + sum(1 for ts in unit_terms if t in ts)))
           for t in q_terms}
    total = sum(idf.values()) or 1.0
    return [sum(idf[t] for t in q_terms & ts) / total for ts in unit_terms]


def _around(found: list[Unit], i: int) -> list[int]:
    """Unit i and the units just before and after it in its passage."""
    return [j for j in (i - 1, i, i + 1) if 0 <= j < len(found) and found[j].n == found[i].n]


def choose(found: list[Unit], scores: list[float]) -> list[list[int]]:
    """The quotes, as runs of unit indexes: the best unit, then up to MAX_QUOTES - 1 more that score close to it,
    each with the sentences around it in its paragraph while the answer stays under MAX_CHARS (else alone).
    Runs that touch in one passage join. Best first, no sentence twice."""
    order = sorted(range(len(found)), key=lambda i: -scores[i])
    quotes: list[list[int]] = []
    taken: set[int] = set()
    seen: set[str] = set()  # the same sentence in two passages (or documents) is quoted once
    length = 0
    for i in order:
        if i in taken or normalize(found[i].text) in seen:
            continue
        if quotes and (scores[i] < CLOSE * scores[order[0]] or len(quotes) >= MAX_QUOTES):
            break
        run = [j for j in _block(found, i) if j not in taken and normalize(found[j].text) not in seen]
        if length + sum(len(found[j].text) for j in run) > MAX_CHARS:
            run = [i]
            if quotes and length + len(found[i].text) > MAX_CHARS:
                break
        taken.update(run)
        seen.update(normalize(found[j].text) for j in run)
        length += sum(len(found[j].text) for j in run)
        joined = next((q for q in quotes if _next(found, q[-1]) == run[0] or _next(found, run[-1]) == q[0]), None)
        if joined is None:
            quotes.append(run)
        else:
            joined[:] = sorted(joined + run)
    return quotes


def _block(found: list[Unit], i: int) -> list[int]:
    """Unit i with the sentences just before and after it, where they follow on in the passage's text."""
    before = [i - 1] if i > 0 and _next(found, i - 1) == i else []
    after = [i + 1] if _next(found, i) == i + 1 else []
    return before + [i] + after


def _next(found: list[Unit], i: int) -> int | None:
    """The sentence that follows unit i in its paragraph (None for a table row or a paragraph's last sentence)."""
    j = i + 1
    if (j < len(found) and found[j].n == found[i].n and found[j].paragraph == found[i].paragraph
            and found[i].start >= 0 and found[j].start >= 0):
        return j
    return None


def _quote(found: list[Unit], group: list[int], passage: Passage) -> str:
    """A quote's text: one unit as it is, neighbouring sentences as the passage's text between them."""
    first, last = found[group[0]], found[group[-1]]
    if len(group) == 1:
        return first.text
    return " ".join(passage.text[first.start:last.end].split())


def extract(question: str, passages: list[Passage], lang: str, similarity: Similarity | None = None,
            rarity: Rarity | None = None) -> tuple[str, tuple[Citation, ...]]:
    """The quoted answer (label, then one line per quote with its [n]) and its citations. `rarity` gives
    the KB's IDF of key terms (Retriever.term_rarity)."""
    found = [u for p in passages for u in units(p)]
    if not found:
        return "", ()
    ranks = {p.n: rank for rank, p in enumerate(sorted(passages, key=lambda p: -p.score), 1)}
    by_number = {p.n: p for p in passages}
    quotes = [(found[g[0]].n, _quote(found, g, by_number[found[g[0]].n]))
              for g in choose(found, score_units(question, found, similarity, ranks, rarity))]
    lines = [LABEL[lang]] + [f"- {text} [{n}]" for n, text in quotes]
    citations = tuple(Citation(n=n, path=by_number[n].path, page=by_number[n].page, section=by_number[n].section,
                               text=by_number[n].text, sentence=text, overlap=1.0) for n, text in quotes)
    return "\n".join(lines), citations
