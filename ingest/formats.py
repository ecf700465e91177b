"""The loaders, one per family of formats: each turns a file into Elements (`Loader(path, job)`).

unstructured parses the office, web, mail and markup formats (`partitioner`, plus HTML's fallback and the
e-mail header); kb's own code reads CSV (a table) and JSON (key paths), and hands PDFs and images to
kb.ingest.pdf and kb.ingest.ocr. Old binary Office files are converted by LibreOffice (kb.ingest.office),
then read by their modern format's loader. Which suffix gets which loader, and the checks every file
passes, are kb.ingest.loaders; loaders raise anything on a damaged file, and `load` reports it.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from kb.types import Element

from .limits import Job, read_text
from .ocr import load_image
from .office import load_legacy
from .offline import prepare_unstructured
from .pdf import load_pdf

Loader = Callable[[Path, Job], list[Element]]

_SKIP = {"PageBreak", "Header", "Footer", "PageNumber", "Image"}


# -- unstructured ------------------------------------------------------------------------------
def partitioner(module: str, func: str, reads_text: bool = False) -> Loader:
    """A loader that runs `unstructured.partition.<module>.<func>` (imported on first use: it is slow)."""

    def load_with(path: Path, job: Job) -> list[Element]:
        prepare_unstructured()
        partition = getattr(importlib.import_module(f"unstructured.partition.{module}"), func)
        if reads_text:  # kb decodes, so GBK / Big5 / UTF-16 files come out right
            return _from_unstructured(partition(text=read_text(path, job)))
        return _from_unstructured(partition(filename=str(path)))

    return load_with


def _from_unstructured(items: list[Any]) -> list[Element]:
    out: list[Element] = []
    for item in items:
        category = item.category
        text = item.text or ""
        page = getattr(item.metadata, "page_number", None)
        if category in _SKIP:
            continue
        if category == "Title":
            # Sphinx and other generators end headings with a "¶" permalink; it is not part of the title.
            out.append(Element(text.rstrip("¶ \t"), "title", page, depth=item.metadata.category_depth or 0))
        elif category == "Table":
            rows = _table_rows(getattr(item.metadata, "text_as_html", None))
            if rows and len(rows) > 1 and max(len(r) for r in rows) > 1:
                out.append(Element(text, "table", page, rows=rows))
            else:
                out.append(Element(text, "text", page))
        elif category == "ListItem":
            out.append(Element(text, "list", page))
        elif category in ("CodeSnippet", "Formula"):
            out.append(Element(text, "code", page))
        else:
            out.append(Element(text, "text", page))
    return out


def _table_rows(html: str | None) -> tuple[tuple[str, ...], ...] | None:
    if not html:
        return None
    import lxml.html  # unstructured's dependency, slow to import: only for files with tables

    try:
        root = lxml.html.fromstring(html)
    except Exception:
        return None
    rows = []
    for tr in root.iter("tr"):
        cells = tuple(" ".join(td.text_content().split()) for td in tr if td.tag in ("td", "th"))
        if any(cells):
            rows.append(cells)
    return tuple(rows) or None


def load_email(path: Path, job: Job) -> list[Element]:
    """unstructured's e-mail partitioner, with the subject as a title and From / To lines first."""
    prepare_unstructured()
    from unstructured.partition.email import partition_email

    items = partition_email(filename=str(path))
    meta = items[0].metadata if items else None
    head = []
    if meta is not None:
        subject = getattr(meta, "subject", None)
        if subject:
            head.append(Element(subject, "title"))
        for label, value in (("From", getattr(meta, "sent_from", None)), ("To", getattr(meta, "sent_to", None))):
            if value:
                head.append(Element(f"{label}: {', '.join(value)}"))
    return head + _from_unstructured(items)


def load_html(path: Path, job: Job) -> list[Element]:
    """unstructured's HTML partitioner; lxml gives up past 255 nested tags and returns nothing, so a
    page with text but no elements is read again with the standard library's parser (no depth limit)."""
    elements = _partition_html(path, job)
    if any(e.text.strip() for e in elements):
        return elements
    return [Element(p) for p in _html_paragraphs(read_text(path, job))]


_partition_html = partitioner("html", "partition_html", reads_text=True)


class _HtmlText(HTMLParser):
    """The text runs of an HTML page, outside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(" ".join(data.split()))


def _html_paragraphs(html: str) -> list[str]:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.parts


def legacy_office(modern: Loader) -> Loader:
    """.doc/.wps/.rtf/.xls/.ppt: LibreOffice converts, then the modern format's loader reads the copy."""

    def load_with(path: Path, job: Job) -> list[Element]:
        return load_legacy(path, lambda converted: modern(converted, job))

    return load_with


# -- kb's own -------------------------------------------------------------------------------------
def load_csv(path: Path, job: Job) -> list[Element]:
    """A table (the dialect sniffed from the first 8 KB), or one line for a one-row file."""
    text = read_text(path, job)
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    rows = tuple(tuple(r) for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r))
    if not rows:
        return []
    if len(rows) == 1:
        return [Element(" | ".join(rows[0]))]
    return [Element("", "table", rows=rows)]


def load_json(path: Path, job: Job) -> list[Element]:
    """One Element of key-path lines per JSON value (per line of a .jsonl)."""
    text = read_text(path, job)
    if path.suffix.lower() == ".jsonl":
        values = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        values = [json.loads(text)]
    return [Element("\n".join(_flatten(value, ""))) for value in values]


def _flatten(value: Any, prefix: str) -> Iterator[str]:
    """'a.b[0].c: value' lines, so keys stay next to their values in every chunk."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield f"{prefix}: {value}" if prefix else str(value)


def load_pdf_file(path: Path, job: Job) -> list[Element]:
    return load_pdf(path, job.ocr)


def load_image_file(path: Path, job: Job) -> list[Element]:
    return load_image(path, job.ocr)
