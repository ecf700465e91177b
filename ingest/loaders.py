"""Turn a file into a list of Elements, choosing the parser by file extension.

unstructured parses the office, web, mail and markup formats; kb's own code handles PDF (pypdfium2,
page by page, scanned pages through OCR), images (OCR), old binary Office files (converted by
LibreOffice, then parsed as their modern format), plain text (encoding detection first), CSV and JSON
(structure kept as a table or as key paths). A file that cannot be parsed raises ParseError with the
reason; callers report it and go on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kb.errors import ParseError
from kb.types import Element

from .ocr import IMAGE_SUFFIXES, OcrRun, load_image
from .pdf import load_pdf
from .textfile import decode_bytes

_SKIP = {"PageBreak", "Header", "Footer", "PageNumber", "Image"}
_TEXT_SUFFIXES = {".txt", ".text", ".log"}


@dataclass(frozen=True)
class Limits:
    """What one file may hold: they keep a hostile or accidental file from taking the run's memory or hours
    of embedding (5 million characters is about 2,500 book pages, 25,000 chunks, 15 CPU-minutes of the
    default embedder). Set by the `ingest` settings."""

    file_bytes: int = 100 << 20
    text_chars: int = 5_000_000
    unzipped_xml_bytes: int = 256 << 20  # office / EPUB files are zips of XML, parsed whole in memory

    @classmethod
    def from_settings(cls, settings) -> Limits:
        """From kb.config.IngestSettings."""
        return cls(int(settings.max_file_mb * (1 << 20)), settings.max_text_chars,
                   int(settings.max_unzipped_mb * (1 << 20)))


@dataclass
class _Job:
    """What a loader is given besides the path: the file's limits, and its OCR run (options, progress,
    pages read)."""

    limits: Limits = field(default_factory=Limits)
    ocr: OcrRun = field(default_factory=OcrRun)


_ZIPPED = {".docx", ".pptx", ".xlsx", ".xlsm", ".odt", ".epub"}


def supported_suffixes() -> set[str]:
    return set(_LOADERS)


def load(path: Path, limits: Limits | None = None, ocr: OcrRun | None = None) -> list[Element]:
    """Parse one file. Raises ParseError (path + reason) for anything that cannot be read. `ocr` carries the
    OCR settings and progress callback in, and the number of pages OCR read out."""
    limits = limits or Limits()
    job = _Job(limits, ocr if ocr is not None else OcrRun())
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ParseError(str(path), f"unsupported file type '{path.suffix or '(none)'}'")
    size = path.stat().st_size
    if size > limits.file_bytes:
        raise ParseError(str(path), f"file too large ({size / 2**20:,.1f} MB; kb reads files up to "
                                    f"{limits.file_bytes / 2**20:g} MB, ingest.max_file_mb): split it into "
                                    "smaller files or raise the limit")
    try:
        if path.suffix.lower() in _ZIPPED:
            _check_unzipped_size(path, limits)
        elements = loader(path, job)
    except ParseError:
        raise
    except (OSError, UnicodeError) as e:
        raise ParseError(str(path), f"cannot read: {e}") from e
    except Exception as e:  # parsers raise anything on damaged files; report and go on
        raise ParseError(str(path), f"{type(e).__name__}: {e}".strip()) from e
    elements = [e for e in elements if e.text.strip() or e.rows]
    if not elements:
        raise ParseError(str(path), "no text found (empty file, or only images)")
    _check_text_size(path, sum(len(e.text) + sum(len(c) for row in e.rows or () for c in row) for e in elements),
                     limits)
    return elements


def _check_text_size(path: Path, chars: int, limits: Limits) -> None:
    if chars > limits.text_chars:
        raise ParseError(str(path), f"too much text ({chars:,} characters; kb takes up to {limits.text_chars:,} "
                                    "per file, ingest.max_text_chars): split it into smaller files")


def _check_unzipped_size(path: Path, limits: Limits) -> None:
    """Refuse a zip bomb by the sizes its directory declares (zipfile never inflates past them)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            xml = sum(i.file_size for i in z.infolist()
                      if i.filename.lower().endswith((".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx")))
    except zipfile.BadZipFile as e:
        raise ParseError(str(path), f"damaged file: not a valid {path.suffix} (zip) container ({e})") from e
    if xml > limits.unzipped_xml_bytes:
        raise ParseError(str(path), f"unpacks to {xml / 2**20:,.0f} MB of XML (limit {limits.unzipped_xml_bytes / 2**20:g} "
                                    "MB, ingest.max_unzipped_mb): a zip bomb or a damaged file")


def _read_text(path: Path, job: _Job) -> str:
    """The decoded text of a text-like file, refused before any parsing if it is too long."""
    text, _ = decode_bytes(path.read_bytes())
    _check_text_size(path, len(text), job.limits)
    return text


def document_title(path: Path, elements: list[Element]) -> str:
    """The first heading if there is a short one, else the file name."""
    for e in elements[:20]:
        if e.kind == "title" and 0 < len(e.text) <= 120:
            return " ".join(e.text.split())
    return path.name


# -- unstructured ------------------------------------------------------------------------------
def _from_unstructured(items) -> list[Element]:
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
    import lxml.html

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


Loader = Callable[[Path, _Job], list[Element]]


def _partitioner(module: str, func: str, reads_text: bool = False) -> Loader:
    def load_with(path: Path, job: _Job) -> list[Element]:
        from .offline import prepare_unstructured

        prepare_unstructured()
        mod = __import__(f"unstructured.partition.{module}", fromlist=[func])
        partition = getattr(mod, func)
        if reads_text:  # kb decodes, so GBK / Big5 / UTF-16 files come out right
            text = _read_text(path, job)
            return _from_unstructured(partition(text=text))
        return _from_unstructured(partition(filename=str(path)))

    return load_with


def _legacy_office(modern: str) -> Loader:
    """.doc/.wps/.rtf/.xls/.ppt: LibreOffice converts, then the modern format's loader reads the copy."""

    def load_with(path: Path, job: _Job) -> list[Element]:
        from .office import load_legacy

        return load_legacy(path, lambda converted: _LOADERS[modern](converted, job))

    return load_with


def _load_email(path: Path, job: _Job) -> list[Element]:
    from .offline import prepare_unstructured

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


def _load_html(path: Path, job: _Job) -> list[Element]:
    """unstructured's HTML partitioner; lxml gives up past 255 nested tags and returns nothing, so a
    page with text but no elements is read again with the standard library's parser (no depth limit)."""
    elements = _partitioner("html", "partition_html", reads_text=True)(path, job)
    if any(e.text.strip() for e in elements):
        return elements
    return [Element(p) for p in _html_paragraphs(_read_text(path, job))]


def _html_paragraphs(html: str) -> list[str]:
    from html.parser import HTMLParser

    class Text(HTMLParser):
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

    parser = Text()
    parser.feed(html)
    parser.close()
    return parser.parts


# -- kb's own -------------------------------------------------------------------------------------
_load_text = _partitioner("text", "partition_text", reads_text=True)


def _load_csv(path: Path, job: _Job) -> list[Element]:
    text = _read_text(path, job)
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


def _load_json(path: Path, job: _Job) -> list[Element]:
    text = _read_text(path, job)
    if path.suffix.lower() == ".jsonl":
        values = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        values = [json.loads(text)]
    out: list[Element] = []
    for value in values:
        lines = list(_flatten(value, ""))
        out.append(Element("\n".join(lines)))
    return out


def _flatten(value, prefix: str):
    """'a.b[0].c: value' lines, so keys stay next to their values in every chunk."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield f"{prefix}: {value}" if prefix else str(value)


def _load_pdf(path: Path, job: _Job) -> list[Element]:
    return load_pdf(path, job.ocr)


def _load_image(path: Path, job: _Job) -> list[Element]:
    return load_image(path, job.ocr)


_LOADERS: dict[str, Loader] = {
    ".pdf": _load_pdf,
    ".html": _load_html,
    ".htm": _load_html,
    ".xhtml": _load_html,
    ".md": _partitioner("md", "partition_md", reads_text=True),
    ".markdown": _partitioner("md", "partition_md", reads_text=True),
    ".docx": _partitioner("docx", "partition_docx"),
    ".odt": _partitioner("odt", "partition_odt"),
    ".pptx": _partitioner("pptx", "partition_pptx"),
    ".xlsx": _partitioner("xlsx", "partition_xlsx"),
    ".xlsm": _partitioner("xlsx", "partition_xlsx"),
    ".epub": _partitioner("epub", "partition_epub"),
    ".rst": _partitioner("rst", "partition_rst"),
    ".org": _partitioner("org", "partition_org"),
    ".msg": _partitioner("msg", "partition_msg"),
    ".eml": _load_email,
    ".doc": _legacy_office(".docx"),
    ".wps": _legacy_office(".docx"),  # WPS Office's writer files
    ".rtf": _legacy_office(".docx"),
    ".xls": _legacy_office(".xlsx"),
    ".ppt": _legacy_office(".pptx"),
    ".csv": _load_csv,
    ".tsv": _load_csv,
    ".json": _load_json,
    ".jsonl": _load_json,
    **{s: _load_text for s in _TEXT_SUFFIXES},
    **{s: _load_image for s in IMAGE_SUFFIXES},
}
