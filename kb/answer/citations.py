"""Citation markers in a generated answer: parse them, drop those that point at no passage, and tie
each remaining one to the sentence that carries it.

Accepted marker forms: [1], [1][2], [1, 2], [1，2], 【1】 and [^1]. A marker written just after a
sentence's final punctuation ("... in 2020. [2]") belongs to that sentence. A sentence with no valid
marker (and at least INFER_MIN_TERMS key terms) is attributed to the passage that holds most of its
key terms when that share reaches INFER_OVERLAP (an "inferred" citation: small models such as SmolLM2-135M copy passage sentences but
rarely write markers); otherwise it is "unsupported". Every citation records that overlap. This
module leaves out judging whether a passage really supports a claim (`kb eval --answers` measures
that against known evidence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.answer.types import Citation, Passage
from kb.text.keywords import query_terms
from kb.text.sentences import EN_ENDS, LIST_LEAD, ONLY_LIST_MARK, SENTENCE_BREAK, ZH_ENDS

INFER_OVERLAP = 0.6
INFER_MIN_TERMS = 3  # shorter sentences ("PWNED.", "Yes.") say too little to be tied to a passage

_NUM = r"\^?\s*\d{1,3}"
MARKER = re.compile(rf"[ \t]?[\[【]({_NUM}(?:\s*[,，、]\s*{_NUM})*)\s*[\]】]")
_CONTENT = re.compile(r"[^\W\d_]", re.UNICODE)  # a letter or a CJK character


@dataclass(frozen=True)
class Verified:
    """The result of checking an answer's markers."""

    text: str  # the answer with markers that point nowhere removed
    citations: tuple[Citation, ...]
    unsupported: tuple[str, ...]
    dropped: tuple[int, ...]  # numbers that pointed at no passage, in order of appearance


def marker_numbers(marker_body: str) -> list[int]:
    """'1, ^2' -> [1, 2]."""
    return [int(n) for n in re.findall(r"\d+", marker_body)]


def clean_markers(text: str, valid: set[int]) -> tuple[str, list[int]]:
    """Rewrite every marker keeping only valid numbers (as [a][b]); return the text and dropped numbers."""
    dropped: list[int] = []

    def fix(m: re.Match) -> str:
        nums = marker_numbers(m.group(1))
        dropped.extend(n for n in nums if n not in valid)
        keep = list(dict.fromkeys(n for n in nums if n in valid))
        lead = m.group(0)[0] if m.group(0)[0] in " \t" else ""
        return lead + "".join(f"[{n}]" for n in keep) if keep else ""

    return MARKER.sub(fix, text), dropped


def split_sentences(text: str) -> list[str]:
    """Sentences in order; leading markers of a piece are moved onto the sentence before it."""
    pieces = [p.strip() for p in SENTENCE_BREAK.split(text) if p and p.strip()]
    out: list[str] = []
    carry = ""
    for piece in pieces:
        if ONLY_LIST_MARK.match(piece):  # "1." of a numbered list starts the next sentence
            carry = piece + " "
            continue
        piece, carry = carry + piece, ""
        lead = re.match(rf"^(?:{MARKER.pattern}\s*)+", piece)
        if lead and out:
            out[-1] = out[-1] + " " + lead.group(0).strip()
            piece = piece[lead.end():].strip()
        if piece:
            out.append(piece)
    return out


def strip_markers(sentence: str) -> str:
    """The sentence without markers and without a leading list number ("1. ", "- ")."""
    text = re.sub(rf"\s+([{ZH_ENDS}{EN_ENDS},，])", r"\1", MARKER.sub("", sentence)).strip()
    return LIST_LEAD.sub("", text)


def _stem(term: str) -> str:
    return term[:-1] if len(term) > 3 and term.endswith("s") and not term.endswith("ss") else term


def key_terms(text: str) -> set[str]:
    return {_stem(t) for t in query_terms(text)}


def overlap(sentence_terms: set[str], passage_terms: set[str]) -> float:
    """Share of the sentence's key terms that the passage holds."""
    return len(sentence_terms & passage_terms) / len(sentence_terms) if sentence_terms else 0.0


def verify(text: str, passages: list[Passage]) -> Verified:
    """Check `text`'s markers against the numbered `passages` (see the module docstring)."""
    by_number = {p.n: p for p in passages}
    passage_terms = {p.n: key_terms(p.text) for p in passages}
    cleaned, dropped = clean_markers(text, set(by_number))
    citations: list[Citation] = []
    unsupported: list[str] = []
    for sentence in split_sentences(cleaned):
        numbers = list(dict.fromkeys(n for m in MARKER.finditer(sentence) for n in marker_numbers(m.group(1))))
        plain = strip_markers(sentence)
        terms = key_terms(plain)
        inferred = False
        if not numbers:
            if not _CONTENT.search(plain):
                continue
            best = max(passages, key=lambda p: overlap(terms, passage_terms[p.n]), default=None)
            if best is None or len(terms) < INFER_MIN_TERMS or overlap(terms, passage_terms[best.n]) < INFER_OVERLAP:
                unsupported.append(plain)
                continue
            numbers, inferred = [best.n], True
        for n in numbers:
            p = by_number[n]
            citations.append(Citation(n=n, path=p.path, page=p.page, section=p.section, text=p.text,
                                      sentence=plain, overlap=round(overlap(terms, passage_terms[n]), 3),
                                      inferred=inferred))
    return Verified(cleaned.strip(), tuple(citations), tuple(unsupported), tuple(dropped))
