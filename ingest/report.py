"""What an ingest run reports: per-file results, the run's totals, and the progress events a display
receives while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FileResult:
    path: str
    status: str  # added | updated | unchanged | failed | removed | unsupported
    chunks: int = 0
    reason: str = ""
    ocr_pages: int = 0  # pages (or images) read by OCR
    unread_pages: int = 0  # scanned pages left unread: OCR off or not installed


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)  # in the KB, gone from disk, kept (no --prune)
    ocr_seconds: float = 0.0  # time spent in OCR (in the parse worker, overlapping the embedder)
    ocr_engine: str = ""
    ocr_missing: str = ""  # why scanned pages went unread (OCR off or not installed), if any did

    @property
    def ocr_pages(self) -> int:
        return sum(f.ocr_pages for f in self.files)

    @property
    def unread_pages(self) -> int:
        return sum(f.unread_pages for f in self.files)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def changed(self) -> bool:
        return any(f.status in ("added", "updated", "removed") for f in self.files)


@dataclass(frozen=True)
class Progress:
    """What a progress display is told: the run starts, a file is done, chunks were embedded, OCR read a
    page (`page` of `total` in `path`), the KB's keyword index is being built from its rows (`chunks` of `total`:
    a KB made before it, upgraded before the run's writes)."""

    kind: str  # "start" | "file" | "embedded" | "page" | "keywords" | "vectors"
    total: int = 0
    result: FileResult | None = None
    chunks: int = 0
    path: str = ""
    page: int = 0
