"""PDF text, page by page, with pypdfium2.

unstructured's "fast" PDF strategy (pdfminer) needs two minutes for a 250-page Chinese manual;
pdfium reads the same text layer in half a second. Sections come from the PDF's bookmarks (its
outline) when it has them: every page knows the heading path it falls under. Scanned PDFs without a
text layer are reported, not silently indexed as empty (kb does no OCR).
"""

from __future__ import annotations

import re
from pathlib import Path

from kb.errors import ParseError
from kb.types import Element

_SENTENCE_END = re.compile(r"[。！？；.!?;:：]$")
_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def load_pdf(path: Path) -> list[Element]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        reason = str(e)
        if "password" in reason.lower():
            reason = "the PDF is encrypted (password protected); decrypt it first, e.g. with qpdf --decrypt"
        raise ParseError(str(path), f"not a readable PDF ({reason})") from e
    try:
        outline = _outline(pdf)
        elements: list[Element] = []
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            text = textpage.get_text_range()
            textpage.close()
            page.close()
            for title, depth in outline.get(index, []):
                elements.append(Element(title, kind="title", page=index + 1, depth=depth))
            for para in _paragraphs(text):
                elements.append(Element(para, page=index + 1))
    finally:
        pdf.close()
    if not any(e.kind != "title" for e in elements):
        raise ParseError(str(path), "the PDF has no text layer (a scan?); kb does not run OCR")
    return elements


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
        if _SENTENCE_END.search(line) and len(line) < full * 0.85:
            _flush(current, paras)
    _flush(current, paras)
    return paras


def _flush(lines: list[str], out: list[str]) -> None:
    if not lines:
        return
    text = lines[0]
    for line in lines[1:]:
        if text.endswith("-") and not text.endswith(" -") and line[:1].islower():
            text = text[:-1] + line  # re-join a hyphenated English word
        elif _CJK.search(text[-1:]) and _CJK.search(line[:1]):
            text += line  # Chinese lines join without a space
        else:
            text += " " + line
    out.append(text)
    lines.clear()
