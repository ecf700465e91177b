"""Split parsed elements into chunks that respect the document's structure.

A chunk never crosses a heading, a page or a table edge. Inside a section, text is cut at sentence
ends (Chinese 。！？； and English .!?; followed by a space), code at line ends and tables at row ends,
and packed up to a budget counted in the embedder's own tokens (minus the heading line every chunk is
embedded with). Sections carry an overlap of whole sentences; a table chunk repeats the header row
instead. A sentence longer than the budget is cut at whitespace as a last resort.

Every chunk's text is a slice of the document text (elements joined by blank lines), so its character
offsets point exactly at it; a table chunk is the header line followed by such a slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kb.text.sentences import SENTENCE_END_MARK
from kb.types import Element

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Draft:
    """A chunk before it has ids: text, heading path, page and offsets into the document text."""

    text: str
    section: str
    page: int | None
    char_start: int
    char_end: int


@dataclass
class _Unit:
    start: int
    end: int
    section: str
    page: int | None
    group: int  # units of different groups never share a chunk (a table, or prose)
    header: str = ""  # table header line repeated at the top of each chunk of the table
    tokens: int = 0


def render_table(rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(" | ".join(c.strip() for c in row) for row in rows)


def split_document(
    elements: Sequence[Element], count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int, title: str = ""
) -> tuple[str, list[Draft]]:
    """Return (document text, chunk drafts) for one document."""
    text, units = _units(elements)
    if not units:
        return text, []
    sections = sorted({u.section or title for u in units})
    counts = count_tokens([text[u.start:u.end] for u in units] + sections + [u.header for u in units if u.header])
    for u, n in zip(units, counts):
        u.tokens = n
    head_tokens = dict(zip(sections, counts[len(units):len(units) + len(sections)]))
    header_counts = iter(counts[len(units) + len(sections):])
    table_head = {u.group: next(header_counts) for u in units if u.header}
    drafts: list[Draft] = []
    current: list[_Unit] = []
    used = 0

    def flush() -> None:
        if current:
            drafts.append(_draft(text, current))

    for u in units:
        budget = max(8, max_tokens - head_tokens[u.section or title] - 2 - table_head.get(u.group, 0))
        if current and (u.section, u.page, u.group) != (current[0].section, current[0].page, current[0].group):
            flush()
            current, used = [], 0
        if u.tokens > budget:
            flush()
            drafts.extend(_draft(text, [piece]) for piece in _cut(text, u, budget))
            current, used = [], 0
            continue
        if used + u.tokens > budget:
            flush()
            current = [] if u.header else _tail(current, overlap_tokens)
            used = sum(x.tokens for x in current)
            if used + u.tokens > budget:
                current, used = [], 0
        current.append(u)
        used += u.tokens
    flush()
    return text, drafts


def _units(elements: Sequence[Element]) -> tuple[str, list[_Unit]]:
    """Join element texts into the document text; cut each element into sentences, lines or rows."""
    parts: list[str] = []
    pos = 0
    stack: list[str] = []
    units: list[_Unit] = []
    group = 0
    elements = _demote_empty_titles([e for e in elements if e.text.strip() or e.rows])
    for el in elements:
        body = render_table(el.rows) if el.kind == "table" and el.rows else el.text.strip()
        if parts:
            parts.append("\n\n")
            pos += 2
        start = pos
        parts.append(body)
        pos += len(body)
        if el.kind == "title":
            depth = min(max(el.depth, 0), len(stack))
            stack = stack[:depth] + [" ".join(body.split())]
            continue
        section = " > ".join(stack)
        if el.kind == "table" and el.rows and len(el.rows) > 1:
            group += 1
            header = render_table(el.rows[:1])
            offset = start + len(header) + 1
            for row in el.rows[1:]:
                line = render_table([row])
                units.append(_Unit(offset, offset + len(line), section, el.page, group, header))
                offset += len(line) + 1
            group += 1
            continue
        for s, e in _sentences(body):
            units.append(_Unit(start + s, start + e, section, el.page, group))
    return "".join(parts), units


def _demote_empty_titles(elements: list[Element]) -> list[Element]:
    """A 'title' with no body under it (parsers guess titles for short lines) is kept as text."""
    out = list(elements)
    for i, el in enumerate(out):
        if el.kind != "title":
            continue
        nxt = out[i + 1] if i + 1 < len(out) else None
        if nxt is None or (nxt.kind == "title" and nxt.depth <= el.depth):
            out[i] = Element(el.text, "text", el.page)
    return out


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences in text, whitespace trimmed."""
    spans = []
    begin = 0
    for m in SENTENCE_END_MARK.finditer(text):
        spans.append((begin, m.end()))
        begin = m.end()
    spans.append((begin, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def _tail(units: list[_Unit], overlap_tokens: int) -> list[_Unit]:
    """The last whole sentences of a chunk that fit the overlap (never the whole chunk)."""
    tail: list[_Unit] = []
    total = 0
    for u in reversed(units[1:]):
        if total + u.tokens > overlap_tokens:
            break
        tail.insert(0, u)
        total += u.tokens
    return tail


def _cut(text: str, u: _Unit, budget: int) -> list[_Unit]:
    """Cut one over-long sentence into pieces of about `budget` tokens, at whitespace where possible."""
    n = math.ceil(u.tokens / budget)
    size = math.ceil((u.end - u.start) / n)
    pieces = []
    s = u.start
    while s < u.end:
        e = min(u.end, s + size)
        if e < u.end:
            space = text.rfind(" ", s + size // 2, e)
            e = space if space > s else e
        pieces.append(_Unit(s, e, u.section, u.page, u.group, u.header, math.ceil(u.tokens / n)))
        s = e
        while s < u.end and text[s].isspace():
            s += 1
    return pieces


def _draft(text: str, units: list[_Unit]) -> Draft:
    first, last = units[0], units[-1]
    body = text[first.start:last.end]
    if first.header:
        body = first.header + "\n" + body
    return Draft(body, first.section, first.page, first.start, last.end)
