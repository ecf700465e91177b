"""Where a passage's characters stand on a PDF page's text layer, and the page drawn with them highlighted.

The stored passage text and the page's text layer differ in whitespace (ingest joins a page's lines into
paragraphs and re-joins hyphenated words) and sometimes in compatibility forms, so both are compared with
whitespace removed and NFKC applied, character by character, keeping each kept character's index on the page.
An exact find is tried first; otherwise (a table chunk repeats its header row, a hyphen was dropped) the
longest common runs of at least MIN_RUN characters are taken. Boxes are pdfium's character boxes (each glyph's
own extent; the loose ones reach up to the font's bounding box, a third of a line too high for Helvetica) merged
along each line of the unturned page, then mapped through the page's /Rotate and crop box: points from the
top-left corner of the page as it is shown. Runs matched out of the text layer's order (a turned page whose
lines pdfium reads bottom first) are left out: the matching keeps one order.
This module leaves out scans (kb/evidence_scan.py) and the cache and file checks (kb/evidence.py).
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

from kb.errors import EvidenceError

MIN_RUN = 4  # a shorter common run between a passage and its page is as likely chance as evidence
MAX_PIXELS = 4_000_000  # a rendered page's budget: A4 at 2x is 2.0 M pixels, a poster is scaled down
MAX_SCALE = 2.0  # pixels per point (144 dpi): readable, and a page PNG stays a few hundred KB

# never compared: padding, a soft hyphen, and the " | " kb puts between a table's cells (a page has rules there)
SKIPPED = frozenset("\x00\ufffe\uffff\u00ad|")
Rect = tuple[float, float, float, float]  # x0, y0, x1, y1: top-left origin, y down


def squeeze(chars: Sequence[str]) -> tuple[str, list[int]]:
    """The characters with whitespace (and SKIPPED) dropped, NFKC applied and lower-cased, and for each kept one
    its index in `chars`."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(chars):
        for c in unicodedata.normalize("NFKC", ch):
            if not c.isspace() and c not in SKIPPED:
                out.append(c.lower())
                where.append(i)
    return "".join(out), where


def align(chars: Sequence[str], passage: str) -> list[int]:
    """Indices into `chars` (one page's characters) that the passage's text covers, in order; [] if none."""
    page, where = squeeze(chars)
    want, _ = squeeze(passage)
    if not want or not page:
        return []
    at = page.find(want)
    if at >= 0:
        return sorted(set(where[at:at + len(want)]))
    matcher = difflib.SequenceMatcher(None, page, want, autojunk=False)
    hit: set[int] = set()
    for block in matcher.get_matching_blocks():
        if block.size >= MIN_RUN:
            hit.update(where[block.a:block.a + block.size])
    return sorted(hit) if len(hit) >= min(len(want) // 2, 8) else []


def open_pdf(path: Path):
    """The PdfDocument, or EvidenceError saying it is encrypted or damaged."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise EvidenceError(f"{path} is encrypted (password protected), so its page cannot be drawn; decrypt "
                                "it (qpdf --decrypt) and run `kb ingest` on it again") from e
        raise EvidenceError(f"{path} is not a readable PDF ({e}); it may be damaged: replace it and re-ingest it") \
            from e


def get_page(pdf, number: int, path: Path):
    """Page `number` (1-based), or EvidenceError naming the document's page count."""
    if not 1 <= number <= len(pdf):
        raise EvidenceError(f"{path} has {len(pdf)} pages, not a page {number}: the file changed since it was "
                            "ingested; run `kb ingest` on it again")
    return pdf[number - 1]


def page_chars(page) -> tuple[list[str], list[Rect], Callable[[Rect], Rect]]:
    """The text layer's characters, their glyph boxes in points from the top-left corner of the unturned page
    (where text runs left to right, so runs merge along lines), and the map from there to the page as it is shown
    (its /Rotate and crop box applied, as pdfium renders it)."""
    import pypdfium2.raw as raw

    left, bottom, right, top = page.get_cropbox()
    width, height = right - left, top - bottom
    textpage = page.get_textpage()
    try:
        n = textpage.count_chars()
        chars = [chr(raw.FPDFText_GetUnicode(textpage, i) or 32) for i in range(n)]
        rects = []
        for i in range(n):
            x0, y0, x1, y1 = textpage.get_charbox(i)
            rects.append((x0 - left, top - y1, x1 - left, top - y0))
    finally:
        textpage.close()
    turn = page.get_rotation() % 360
    point = {0: lambda x, y: (x, y), 90: lambda x, y: (height - y, x),
             180: lambda x, y: (width - x, height - y), 270: lambda x, y: (y, width - x)}[turn]

    def shown(box: Rect) -> Rect:
        (ax, ay), (bx, by) = point(box[0], box[1]), point(box[2], box[3])
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)

    return chars, rects, shown


def merge_lines(rects: Sequence[Rect]) -> list[Rect]:
    """Character boxes in reading order merged into one box per run on a line."""
    out: list[list[float]] = []
    for x0, y0, x1, y1 in rects:
        if x1 <= x0 and y1 <= y0:
            continue
        if out:
            last = out[-1]
            overlap = min(y1, last[3]) - max(y0, last[1])
            level = last[1] <= (y0 + y1) / 2 <= last[3] or overlap >= 0.5 * min(y1 - y0, last[3] - last[1])
            if level and x0 >= last[0] - (y1 - y0):  # the same line, left to right (a new one starts to the left)
                last[:] = min(last[0], x0), min(last[1], y0), max(last[2], x1), max(last[3], y1)
                continue
        out.append([x0, y0, x1, y1])
    return [(a, b, c, d) for a, b, c, d in out]


def passage_boxes(chars: Sequence[str], rects: Sequence[Rect], passage: str, sentence: str | None,
                  shown: Callable[[Rect], Rect] = lambda box: box) -> tuple[list[Rect], list[Rect]]:
    """(the passage's boxes, the cited sentence's boxes) on one page, mapped by `shown`; ([], []) when the text is
    not there."""
    hit = align(chars, passage)
    if not hit:
        return [], []
    boxes = [shown(b) for b in merge_lines([rects[i] for i in hit])]
    if sentence is None:
        return boxes, boxes
    # the sentence's own characters, found among the passage's
    inside = align([chars[i] for i in hit], sentence)
    return boxes, [shown(b) for b in merge_lines([rects[hit[j]] for j in inside])]


def render_scale(width: float, height: float) -> float:
    """Pixels per point for a page of this size: MAX_SCALE, less for a page larger than MAX_PIXELS at it."""
    return min(MAX_SCALE, (MAX_PIXELS / max(1.0, width * height)) ** 0.5)


def render_page(page, scale: float):
    """The page as an RGB PIL image at `scale` pixels per point."""
    bitmap = page.render(scale=scale)
    try:
        return bitmap.to_pil().convert("RGB")
    finally:
        bitmap.close()


def draw(image, scale: float, outline: Sequence[Rect], highlight: Sequence[Rect]):
    """The image with the passage outlined lightly and the sentence filled translucent yellow (boxes in points)."""
    from PIL import Image, ImageDraw

    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    pad = max(1.0, scale)
    for x0, y0, x1, y1 in outline:
        pen.rectangle((x0 * scale - pad, y0 * scale - pad, x1 * scale + pad, y1 * scale + pad),
                      fill=(255, 200, 0, 28), outline=(230, 140, 0, 150), width=max(1, round(scale)))
    for x0, y0, x1, y1 in highlight:
        pen.rectangle((x0 * scale - pad, y0 * scale - pad, x1 * scale + pad, y1 * scale + pad),
                      fill=(255, 225, 0, 110))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
