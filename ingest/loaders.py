"""Turn a file into a list of Elements, choosing the parser by file extension.

unstructured parses the office, web, mail and markup formats; kb's own code handles PDF (pypdfium2,
page by page, scanned pages through OCR), images (OCR), old binary Office files (converted by
LibreOffice, then parsed as their modern format), plain text (encoding detection first), CSV and JSON
(structure kept as a table or as key paths). A file that cannot be parsed raises ParseError with the
reason; callers report it and go on.

This module holds the registry (suffix -> loader) and `load`, which holds every file to its Limits
(kb.ingest.limits) and turns any parser's failure into a ParseError; the loaders are kb.ingest.formats.
"""

from __future__ import annotations

from pathlib import Path

from kb.errors import ParseError
from kb.types import Element

from .formats import (
    Loader,
    legacy_office,
    load_csv,
    load_email,
    load_html,
    load_image_file,
    load_json,
    load_pdf_file,
    partitioner,
)
from .limits import Job, Limits, check_file_size, check_text_size, check_unzipped_size
from .ocr import IMAGE_SUFFIXES, OcrRun

__all__ = ["Limits", "document_title", "load", "supported_suffixes"]

_TEXT_SUFFIXES = {".txt", ".text", ".log"}
_ZIPPED = {".docx", ".pptx", ".xlsx", ".xlsm", ".odt", ".epub"}  # checked for zip bombs before parsing

_DOCX = partitioner("docx", "partition_docx")
_XLSX = partitioner("xlsx", "partition_xlsx")
_PPTX = partitioner("pptx", "partition_pptx")
_MARKDOWN = partitioner("md", "partition_md", reads_text=True)
_TEXT = partitioner("text", "partition_text", reads_text=True)

_LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf_file,
    ".html": load_html,
    ".htm": load_html,
    ".xhtml": load_html,
    ".md": _MARKDOWN,
    ".markdown": _MARKDOWN,
    ".docx": _DOCX,
    ".odt": partitioner("odt", "partition_odt"),
    ".pptx": _PPTX,
    ".xlsx": _XLSX,
    ".xlsm": _XLSX,
    ".epub": partitioner("epub", "partition_epub"),
    ".rst": partitioner("rst", "partition_rst"),
    ".org": partitioner("org", "partition_org"),
    ".msg": partitioner("msg", "partition_msg"),
    ".eml": load_email,
    ".doc": legacy_office(_DOCX),
    ".wps": legacy_office(_DOCX),  # WPS Office's writer files
    ".rtf": legacy_office(_DOCX),
    ".xls": legacy_office(_XLSX),
    ".ppt": legacy_office(_PPTX),
    ".csv": load_csv,
    ".tsv": load_csv,
    ".json": load_json,
    ".jsonl": load_json,
    **{s: _TEXT for s in _TEXT_SUFFIXES},
    **{s: load_image_file for s in IMAGE_SUFFIXES},
}


def supported_suffixes() -> set[str]:
    """The file suffixes kb reads (lower case, with the dot)."""
    return set(_LOADERS)


def load(path: Path, limits: Limits | None = None, ocr: OcrRun | None = None) -> list[Element]:
    """Parse one file. Raises ParseError (path + reason) for anything that cannot be read. `ocr` carries the
    OCR settings and progress callback in, and the number of pages OCR read out."""
    limits = limits or Limits()
    job = Job(limits, ocr if ocr is not None else OcrRun())
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ParseError(str(path), f"unsupported file type '{path.suffix or '(none)'}'")
    check_file_size(path, limits)
    try:
        if path.suffix.lower() in _ZIPPED:
            check_unzipped_size(path, limits)
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
    check_text_size(path, sum(len(e.text) + sum(len(c) for row in e.rows or () for c in row) for e in elements),
                    limits)
    return elements


def document_title(path: Path, elements: list[Element]) -> str:
    """The first heading if there is a short one, else the file name."""
    for e in elements[:20]:
        if e.kind == "title" and 0 < len(e.text) <= 120:
            return " ".join(e.text.split())
    return path.name
