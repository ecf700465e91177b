"""What one file may hold, what a loader is given with the file, and the checks that hold a file to its limits.

The limits keep a hostile or accidental file from taking the run's memory or hours of embedding; their
defaults are the `ingest` settings' (kb.config.IngestSettings), written there once. Each check raises
ParseError naming the file, the size, the setting and the fix. Which loader reads a file is
kb.ingest.loaders; the loaders themselves are kb.ingest.formats.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from kb.config import IngestSettings
from kb.errors import ParseError

from .ocr import OcrRun
from .textfile import decode_bytes

_MB = 1 << 20
_DEFAULTS = IngestSettings()  # a plain model (no environment is read): its field defaults, nothing else
# The members of a zip container that its parsers read whole into memory.
_XML_MEMBERS = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx")


@dataclass(frozen=True)
class Limits:
    """What one file may hold (5 million characters is about 2,500 book pages, 25,000 chunks, 15 CPU-minutes
    of the default embedder). Set by the `ingest` settings; the defaults are theirs."""

    file_bytes: int = int(_DEFAULTS.max_file_mb * _MB)
    text_chars: int = _DEFAULTS.max_text_chars
    unzipped_xml_bytes: int = int(_DEFAULTS.max_unzipped_mb * _MB)  # office / EPUB files are zips of XML

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Limits:
        """From kb.config.IngestSettings."""
        return cls(int(settings.max_file_mb * _MB), settings.max_text_chars, int(settings.max_unzipped_mb * _MB))


@dataclass
class Job:
    """What a loader is given besides the path: the file's limits, and its OCR run (options, progress,
    pages read)."""

    limits: Limits = field(default_factory=Limits)
    ocr: OcrRun = field(default_factory=OcrRun)


def check_file_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.file_bytes:
        raise ParseError(str(path), f"file too large ({size / _MB:,.1f} MB; kb reads files up to "
                                    f"{limits.file_bytes / _MB:g} MB, ingest.max_file_mb): split it into "
                                    "smaller files or raise the limit")


def check_text_size(path: Path, chars: int, limits: Limits) -> None:
    if chars > limits.text_chars:
        raise ParseError(str(path), f"too much text ({chars:,} characters; kb takes up to {limits.text_chars:,} "
                                    "per file, ingest.max_text_chars): split it into smaller files")


def check_unzipped_size(path: Path, limits: Limits) -> None:
    """Refuse a zip bomb by the sizes its directory declares (zipfile never inflates past them)."""
    try:
        with zipfile.ZipFile(path) as z:
            xml = sum(i.file_size for i in z.infolist() if i.filename.lower().endswith(_XML_MEMBERS))
    except zipfile.BadZipFile as e:
        raise ParseError(str(path), f"damaged file: not a valid {path.suffix} (zip) container ({e})") from e
    if xml > limits.unzipped_xml_bytes:
        raise ParseError(str(path), f"unpacks to {xml / _MB:,.0f} MB of XML (limit {limits.unzipped_xml_bytes / _MB:g} "
                                    "MB, ingest.max_unzipped_mb): a zip bomb or a damaged file")


def read_text(path: Path, job: Job) -> str:
    """The decoded text of a text-like file, refused before any parsing if it is too long."""
    text, _ = decode_bytes(path.read_bytes())
    check_text_size(path, len(text), job.limits)
    return text
