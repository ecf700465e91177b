"""OCR's lines to kb Elements: reading order, table rows, two columns, headings and paragraphs.

An engine (ingest/ocr_engines.py) returns lines with boxes and confidences. Lines whose middles lie within
half a line height form a row; rows of several boxes far apart become table rows, and a run of rows of
two wide boxes is a page set in two columns, read column by column. Larger type (by width per character:
engines pad box heights) becomes a heading; vertical gaps, indents and short sentence-ending lines end
paragraphs. Ruled tables with merged cells, vertical Chinese and handwriting are left out.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from statistics import median

from kb.text.lang import CJK_PUNCT, FULLWIDTH, HAN
from kb.text.sentences import ENDS_A_LINE
from kb.types import Element

# Characters set one em wide and written without spaces between them: ideographs, CJK punctuation and
# full-width forms (OCR here reads Chinese and English, so kana and Hangul are left out).
CJK_WIDE = re.compile(f"[{CJK_PUNCT}{HAN}{FULLWIDTH}]")


def pack_lines(lines: list[Line], width: int, height: int) -> bytes:
    """A page's OCR lines as a KB keeps them for showing a passage on its page (kb/evidence.py): JSON rows [text,
    x0, y0, x1, y1], each box as fractions of the image OCR read (so any rendering of the page maps them),
    zlib-compressed."""
    rows = [[x.text, round(x.x0 / width, 4), round(x.y0 / height, 4), round(x.x1 / width, 4), round(x.y1 / height, 4)]
            for x in lines]
    return zlib.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)


def unpack_lines(data: bytes, width: float, height: float) -> list[Line]:
    """pack_lines' lines with their boxes on a page `width` × `height` (any unit)."""
    return [Line(text, x0 * width, y0 * height, x1 * width, y1 * height, 1.0)
            for text, x0, y0, x1, y1 in json.loads(zlib.decompress(data))]


@dataclass(frozen=True)
class Line:
    """One line (or cell) of text the engine found, with its box in pixels."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def middle(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def em(self) -> float:
        """The font size the box suggests: its width over its characters (a Chinese character is one em
        wide, others about half). Box heights say less: engines pad them by a constant."""
        cjk = len(CJK_WIDE.findall(self.text))
        return (self.x1 - self.x0) / max(1.0, cjk + 0.5 * (len(self.text) - cjk))


# -- engines --------------------------------------------------------------------------------------


def page_elements(lines: list[Line], page: int | None) -> list[Element]:
    """Lines with boxes -> headings, paragraphs and tables in reading order."""
    if not lines:
        return []
    height = median(x.height for x in lines)
    rows = _rows(lines, height)
    left = min(x.x0 for x in lines)
    width = max(x.x1 for x in lines) - left
    out: list[Element] = []
    i = 0
    while i < len(rows):
        cells = _cells(rows[i], height)
        if len(cells) > 1:
            j = i
            block = []
            while j < len(rows) and len(_cells(rows[j], height)) > 1:
                block.append(_cells(rows[j], height))
                j += 1
            out.extend(_multi_cell(block, width, page, height))
            i = j
            continue
        j = i
        while j < len(rows) and len(_cells(rows[j], height)) == 1:
            j += 1
        out.extend(_paragraphs([_join(r) for r in rows[i:j]], height, left, width, page))
        i = j
    return out


def _rows(lines: list[Line], height: float) -> list[list[Line]]:
    """Lines whose middles lie within half a line height of each other form one row, left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda x: x.middle):
        if rows and abs(line.middle - median(x.middle for x in rows[-1])) < height * 0.5:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(r, key=lambda x: x.x0) for r in rows]


def _cells(row: list[Line], height: float) -> list[Line]:
    """A row's boxes, neighbours less than two line heights apart merged (one line the engine cut)."""
    cells: list[Line] = []
    for box in row:
        last = cells[-1] if cells else None
        if last is not None and box.x0 - last.x1 < height * 2:
            space = "" if CJK_WIDE.match(box.text[:1]) and CJK_WIDE.search(last.text[-1:]) else " "
            cells[-1] = Line(last.text + space + box.text, last.x0, min(last.y0, box.y0), box.x1,
                             max(last.y1, box.y1), min(last.confidence, box.confidence))
        else:
            cells.append(box)
    return cells


def _join(row: list[Line]) -> Line:
    cells = _cells(row, max(x.height for x in row) or 1.0)
    return cells[0] if len(cells) == 1 else Line(" ".join(c.text for c in cells), cells[0].x0,
                                                   min(c.y0 for c in cells), cells[-1].x1,
                                                   max(c.y1 for c in cells), min(c.confidence for c in cells))


def _multi_cell(block: list[list[Line]], width: float, page: int | None, height: float) -> list[Element]:
    """Rows of several cells: a table, or a page set in two columns (two wide cells per row)."""
    wide = sum(1 for cells in block if len(cells) == 2 and min(c.x1 - c.x0 for c in cells) > width * 0.3)
    if len(block) >= 3 and wide >= len(block) * 0.7:
        split = median(cells[1].x0 for cells in block if len(cells) == 2)
        left = [c for cells in block for c in cells if c.x1 <= split]
        right = [c for cells in block for c in cells if c.x1 > split]
        return (_paragraphs(left, height, min(c.x0 for c in left), width / 2, page) if left else []) + \
               (_paragraphs(right, height, min(c.x0 for c in right), width / 2, page) if right else [])
    if len(block) == 1:
        return [Element(" ".join(c.text for c in block[0]), page=page)]
    rows = tuple(tuple(c.text for c in cells) for cells in block)
    return [Element("\n".join(" | ".join(r) for r in rows), "table", page, rows=rows)]


def _paragraphs(lines: list[Line], height: float, left: float, width: float, page: int | None) -> list[Element]:
    """Lines -> headings and paragraphs. A paragraph ends at a gap taller than usual, before an indented
    first line, or after a short line that ends a sentence."""
    out: list[Element] = []
    gaps = sorted(b.y0 - a.y1 for a, b in zip(lines, lines[1:], strict=False))
    # Most gaps are between lines of one paragraph; on a page of a few lines, they may all be paragraph
    # gaps, so the usual gap is then taken at most a quarter of a line (single spacing).
    usual_gap = max(0.0, gaps[len(gaps) // 4]) if gaps else 0.0
    if len(gaps) < 4:
        usual_gap = min(usual_gap, height * 0.25)
    body = median(x.em for x in lines if len(x.text) >= 8) if any(len(x.text) >= 8 for x in lines) else 0
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(Element(join_lines(current), page=page))
            current.clear()

    for k, line in enumerate(lines):
        if body and line.em > body * 1.2 and len(line.text) <= 60 and not ENDS_A_LINE.search(line.text):
            flush()
            out.append(Element(line.text, "title", page, depth=0 if line.em > body * 1.5 else 1))
            continue
        if k and current:
            gap = line.y0 - lines[k - 1].y1
            indented = line.x0 - left > height * 1.5
            if gap > usual_gap + height * 0.25 or indented:
                flush()
        current.append(line.text)
        short = line.x1 - left < width * 0.85
        if ENDS_A_LINE.search(line.text) and short:
            flush()
    flush()
    return out


def join_lines(lines: list[str]) -> str:
    """A paragraph's lines as one string: Chinese lines join without a space, a hyphenated English word
    broken across lines is re-joined."""
    text = lines[0]
    for line in lines[1:]:
        if text.endswith("-") and not text.endswith(" -") and line[:1].islower():
            text = text[:-1] + line
        elif CJK_WIDE.search(text[-1:]) and CJK_WIDE.search(line[:1]):
            text += line
        else:
            text += " " + line
    return text
