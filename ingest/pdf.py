"""PDF text, page by page, with pypdfium2.

unstructured's "fast" PDF strategy (pdfminer) needs two minutes for a 250-page Chinese manual;
pdfium reads the same text layer in half a second. Sections come from the PDF's bookmarks (its
outline) when it has them: every page knows the heading path it falls under. A page with (almost) no
text layer but an image on it is a scan: it is rendered and read by OCR (ingest/ocr.py), page by page,
so a PDF whose middle pages were scanned keeps every page's number. With OCR off or not installed, a
PDF with no text at all is reported, not silently indexed as empty.
"""

from __future__ import annotations

from pathlib import Path

from kb.errors import ParseError
from kb.text.sentences import ENDS_A_LINE
from kb.types import Element

from .ocr import OcrRun, available, render_scale
from .ocr_layout import join_lines

# A page is OCR'd when its text layer has fewer characters than SCAN_MAX_CHARS and it holds an image, or
# when one image covers most of it and the text layer is short: a scan with a stamp or Bates number
# added digitally ("Confidential · page 3 of 10") still has its picture read.
SCAN_MAX_CHARS = 20
STAMPED_SCAN_MAX_CHARS = 200
STAMPED_SCAN_COVER = 0.7  # share of the page's area


def load_pdf(path: Path, run: OcrRun | None = None) -> list[Element]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        reason = str(e)
        if "password" in reason.lower():
            reason = "the PDF is encrypted (password protected); decrypt it first, e.g. with qpdf --decrypt"
        raise ParseError(str(path), f"not a readable PDF ({reason})") from e
    ocr = run if run is not None and available(run.options).engine else None
    scans = 0
    try:
        outline = _outline(pdf)
        elements: list[Element] = []
        pages = len(pdf)
        for index in range(pages):
            page = pdf[index]
            textpage = page.get_textpage()
            text = textpage.get_text_range()
            textpage.close()
            for title, depth in outline.get(index, []):
                elements.append(Element(title, kind="title", page=index + 1, depth=depth))
            if _is_scan(page, len("".join(text.split()))):
                scans += 1
                if ocr is not None:
                    elements.extend(_ocr_page(page, index + 1, pages, ocr, path))
                    page.close()
                    continue
                if run is not None:
                    run.unread += 1
            page.close()
            for para in _paragraphs(text):
                elements.append(Element(para, page=index + 1))
    finally:
        pdf.close()
    if not any(e.kind != "title" for e in elements):
        if scans and ocr is None:
            why = available(run.options).why if run is not None else "OCR is off"
            raise ParseError(str(path), f"the PDF has no text layer ({scans} scanned pages) and {why}")
        raise ParseError(str(path), "no text found (the PDF's pages are blank or hold only pictures without text)")
    return elements


def _is_scan(page, chars: int) -> bool:
    if chars >= STAMPED_SCAN_MAX_CHARS:
        return False
    import pypdfium2.raw as raw

    width, height = page.get_size()
    cover = 0.0
    for obj in page.get_objects(max_depth=2):
        if obj.type == raw.FPDF_PAGEOBJ_IMAGE:
            left, bottom, right, top = obj.get_bounds()
            cover = max(cover, (right - left) * (top - bottom) / max(1.0, width * height))
            if chars < SCAN_MAX_CHARS or cover >= STAMPED_SCAN_COVER:
                return True
    return False


def _ocr_page(page, number: int, pages: int, run: OcrRun, path: Path) -> list[Element]:
    """Render one page (1,600 pixels on its long side for RapidOCR, up to 300 dpi for tesseract) and OCR it."""
    width, height = page.get_size()
    bitmap = page.render(scale=render_scale(width, height, run), grayscale=True)
    try:
        image = bitmap.to_pil()
        return run.read(image, number, path, pages)
    finally:
        bitmap.close()


def _outline(pdf) -> dict[int, list[tuple[str, int]]]:
    """Bookmarks by 0-based page index: [(title, depth), ...] in reading order."""
    by_page: dict[int, list[tuple[str, int]]] = {}
    try:
        for mark in pdf.get_toc(max_depth=6):
            dest = mark.get_dest()
            index = dest.get_index() if dest is not None else None
            title = (mark.get_title() or "").strip()
            if index is not None and title:
                by_page.setdefault(index, []).append((title, mark.level))
    except Exception:  # a broken outline must not cost the text
        return {}
    return by_page


def _paragraphs(page_text: str) -> list[str]:
    """Join the page's lines into paragraphs: a blank line or a short, sentence-ending line ends one."""
    paras: list[str] = []
    current: list[str] = []
    lines = page_text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    widths = [len(x.strip()) for x in lines if x.strip()]
    full = sorted(widths)[int(len(widths) * 0.8)] if widths else 0
    for raw in lines:
        line = raw.strip()
        if not line:
            _flush(current, paras)
            continue
        current.append(line)
        if ENDS_A_LINE.search(line) and len(line) < full * 0.85:
            _flush(current, paras)
    _flush(current, paras)
    return paras


def _flush(lines: list[str], out: list[str]) -> None:
    if lines:
        out.append(join_lines(lines))
        lines.clear()
