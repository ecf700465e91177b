"""A passage's boxes on a scanned page or a photo, from the OCR lines ingest kept for the page (`stored_lines`),
else found by reading the page image with OCR at view time.

Ingest keeps each OCR'd page's lines with their boxes in the KB (the local store's page_lines table; KBs built
before, and Milvus KBs, have none: `kb ingest --rebuild` adds them). Without them the page shown is read again with
the engine ingest used (ingest.ocr: RapidOCR, or tesseract). Either way the passage is aligned with the lines,
whitespace-insensitively as on a PDF's text layer (align in kb/evidence_pdf.py), in reading order (a table's cells
row by row, as kb wrote the table). A line is the passage's when at
least half of its characters are matched; boxes are whole lines. Without an OCR engine the page is shown
without highlight and the note says why. This module leaves out the drawing and the cache (kb/evidence.py).
"""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

from kb.config import Settings
from kb.errors import EvidenceError
from kb.evidence_pdf import MAX_PIXELS, Rect, align, squeeze
from kb.ingest.ocr import OcrOptions, available, get_engine
from kb.ingest.ocr_layout import Line, unpack_lines

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase

NOT_ON_PAGE = "the page is shown without highlight: OCR did not find the passage's text on it"
LINE_SHARE = 0.5  # of a line's characters that must belong to the passage for the line to be boxed


def open_photo(path: Path):
    """The photo, upright, as RGB at most MAX_PIXELS, and its scale (shown pixels per original pixel)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as raw:
            raw.draft("RGB", (4096, 4096))
            image = ImageOps.exif_transpose(raw.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise EvidenceError(f"{path} is not a readable image ({e}); it may be damaged: replace it and re-ingest it") \
            from e
    with Image.open(path) as again:
        full = max(again.size)
    scale = min(1.0, (MAX_PIXELS / max(1, image.width * image.height)) ** 0.5)
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample=3)
    return image, max(image.size) / max(1, full)


def read_lines(image, scale: float, settings: Settings) -> tuple[list[str], list[Rect], str]:
    """The page's OCR lines in reading order and their boxes in page units, or a note saying why there are none.
    Read once per page: several passages of one page are then matched against the same lines (line_boxes)."""
    options = OcrOptions.from_settings(settings.ingest)
    engine_name, why = available(options)
    if not engine_name:
        return [], [], (f"the page is shown without highlight: {why}, and this KB kept no OCR lines from ingest "
                        "(`kb ingest --rebuild` keeps them)")
    lines = reading_order([x for x in get_engine(options, Path("page")).read(image)
                           if x.confidence >= options.min_confidence and x.text.strip()])
    return [x.text for x in lines], [(x.x0 / scale, x.y0 / scale, x.x1 / scale, x.y1 / scale) for x in lines], ""


def stored_lines(kb: KnowledgeBase, doc_id: str, page: int | None, width: float,
                 height: float) -> tuple[list[str], list[Rect], str] | None:
    """read_lines' answer from the OCR lines ingest kept for the page (kb.ingest.ocr_layout.pack_lines: boxes as
    fractions of the image OCR read, so on a page `width` × `height` in page units), without reading the image
    again; None where the KB kept none (built before kb kept them: `kb ingest --rebuild` adds them; a Milvus KB)."""
    data = kb.page_lines(doc_id, page or 0)
    if data is None:
        return None
    lines = reading_order(unpack_lines(data, width, height))
    return [x.text for x in lines], [(x.x0, x.y0, x.x1, x.y1) for x in lines], ""


def line_boxes(texts: list[str], rects: list[Rect], passage: str, sentence: str) -> tuple[list[Rect], list[Rect]]:
    """(the passage's line boxes, the sentence's) among a page's OCR lines; ([], []) when the passage is not there."""
    mine = _lines_of(texts, passage)
    cited = mine
    if mine and sentence:
        inside = _lines_of([texts[i] for i in mine], sentence)
        cited = [mine[i] for i in inside]
    return [rects[i] for i in mine], [rects[i] for i in cited]


def reading_order(lines: list[Line]) -> list[Line]:
    """Rows top to bottom (lines whose middles lie within half a line height), each row left to right: a table
    row's cells then read in the order kb wrote the row."""
    if not lines:
        return []
    half = median(x.height for x in lines) / 2
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda x: x.middle):
        if rows and line.middle - rows[-1][0].middle <= half:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [x for row in rows for x in sorted(row, key=lambda x: x.x0)]


def _lines_of(texts: list[str], passage: str) -> list[int]:
    """Indices of the lines that the passage covers (at least LINE_SHARE of their characters)."""
    chars: list[str] = []
    owner: list[int] = []
    for n, text in enumerate(texts):
        chars.extend(text)
        owner.extend([n] * len(text))
        chars.append(" ")
        owner.append(n)
    counts: dict[int, int] = {}
    for i in align(chars, passage):
        counts[owner[i]] = counts.get(owner[i], 0) + 1
    return [n for n in sorted(counts) if counts[n] >= LINE_SHARE * max(1, len(squeeze(texts[n])[0]))]
