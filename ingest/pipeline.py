"""The ingest run: find files -> skip unchanged -> parse + split (a child process) -> embed -> write.

For large jobs (and any job with images to OCR), parsing runs in a child process a few files ahead while
the main process embeds and writes, so parsing and OCR overlap the embedder; the child reports each
OCR'd page back through a queue, for the progress display. Embedding batches span documents, so a folder of
tiny files still fills the model's batches. Each document is written in its own transaction as soon
as its vectors exist: a run that is killed keeps every document it finished, and the next run picks
up the rest. A file that fails to parse is reported and skipped; an older version of it stays.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from kb.errors import KBError, ParseError
from kb.keywords import index_text
from kb.stores import Record, Store
from kb.types import Chunk, DocumentInfo

from .embed import Embedder
from .loaders import Limits, document_title, load, supported_suffixes
from .ocr import IMAGE_SUFFIXES, OcrOptions, OcrRun, available
from .split import split_document

BATCH_CHUNKS = 512  # chunks per encode call across documents (sorted by length inside the call)
PARSE_AHEAD = 3  # files parsed ahead of the embedder in the child process
PROCESS_MIN_FILES = 20  # smaller jobs parse in-process: starting a child costs a few seconds
PROCESS_MIN_BYTES = 2_000_000


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
    page (`page` of `total` in `path`)."""

    kind: str  # "start" | "file" | "embedded" | "page"
    total: int = 0
    result: FileResult | None = None
    chunks: int = 0
    path: str = ""
    page: int = 0


@dataclass(frozen=True)
class ParseSettings:
    """How each file is parsed and split, the same in the main and the child process."""

    max_tokens: int
    overlap_tokens: int
    limits: Limits = Limits()
    ocr: OcrOptions = OcrOptions()


@dataclass
class _Parsed:
    path: Path
    info: DocumentInfo
    text: str
    chunks: list[Chunk]
    keyword_texts: list[str]
    previous: bool  # replaces an older version
    ocr: OcrRun


def doc_id_for(path: str) -> str:
    return hashlib.blake2b(path.encode("utf-8"), digest_size=8).hexdigest()


def chunk_id_for(doc_id: str, ordinal: int, text: str) -> int:
    digest = hashlib.blake2b(f"{doc_id}:{ordinal}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[OSError]]:
    """(supported files, unsupported files, folders that could not be listed) under the given
    files/folders; hidden entries skipped, symlinks to files followed, folder symlinks not (no loops)."""
    suffixes = supported_suffixes()
    found: dict[str, Path] = {}
    unsupported: list[Path] = []
    unlisted: list[OSError] = []
    for root in paths:
        if not root.exists():
            raise KBError(f"{root}: no such file or folder")
        candidates = [root] if not root.is_dir() else _walk(root, unlisted.append)
        for p in candidates:
            if not p.is_file():  # a link that leads nowhere: run_ingest reports why it cannot be read
                found.setdefault(str(p.absolute()), p.absolute())
            elif p.suffix.lower() in suffixes:
                found.setdefault(str(p.resolve()), p.resolve())
            else:
                unsupported.append(p)
    return sorted(found.values()), unsupported, unlisted


def _walk(root: Path, onerror: Callable[[OSError], None]) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root, onerror=onerror, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(folder, name)
            if p.is_file() or p.is_symlink():  # a dangling or looping link is reported, not skipped
                yield p


def run_ingest(
    store: Store,
    embedder: Callable[[], Embedder],
    roots: list[Path],
    *,
    max_tokens: int,
    overlap_tokens: int,
    prune: bool = False,
    progress: Callable[[Progress], None] | None = None,
    limits: Limits | None = None,
    ocr: OcrOptions | None = None,
) -> IngestReport:
    """Bring the store up to date with the files under `roots`. The caller holds the write lock."""
    started = time.perf_counter()
    notify = progress or (lambda event: None)
    report = IngestReport()
    files, unsupported, unlisted = discover(roots)
    report.files.extend(FileResult(str(p), "unsupported", reason=f"unsupported file type '{p.suffix}'")
                        for p in unsupported)
    report.files.extend(FileResult(str(e.filename), "failed", reason=f"cannot list folder: {e.strerror or e}")
                        for e in unlisted)
    known = store.document_states()
    notify(Progress("start", total=len(files)))

    todo: list[tuple[Path, os.stat_result]] = []
    for p in files:
        try:
            st = p.stat()
        except OSError as e:  # a looping or dangling link, or a file deleted since the folder was listed
            _done(report, notify, FileResult(str(p), "failed", reason=f"cannot read: {e.strerror or e}"))
            continue
        old = known.get(str(p))
        if old and old[1] == st.st_size and old[2] == st.st_mtime:
            _done(report, notify, FileResult(str(p), "unchanged"))
        else:
            todo.append((p, st))

    if todo:
        parse = ParseSettings(max_tokens, overlap_tokens, limits or Limits(), ocr or OcrOptions())
        _embed_and_write(store, embedder, todo, known, report, notify, parse)
        if report.unread_pages:
            report.ocr_missing = available(parse.ocr)[1]

    present = {str(p) for p in files}
    gone = [path for path in known if path not in present and _under(path, roots)]
    if prune and gone:
        report.chunks_removed += store.remove_documents(known[path][3] for path in gone)
        for path in gone:
            _done(report, notify, FileResult(path, "removed"))
    else:
        report.missing = gone
    if report.changed or not store.finished():
        store.finish()
    report.seconds = time.perf_counter() - started
    return report


def _done(report: IngestReport, notify, result: FileResult) -> None:
    report.files.append(result)
    notify(Progress("file", result=result))


def _under(path: str, roots: list[Path]) -> bool:
    for root in roots:
        r = str(root.resolve())
        if path == r or path.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def _embed_and_write(store, embedder_factory, todo, known, report, notify, parse: ParseSettings) -> None:
    model = embedder_factory()
    pending: list[_Parsed] = []
    for item in _parsed(todo, known, model.token_counter, parse, notify):
        if isinstance(item, FileResult):
            if item.status == "unchanged":
                store.touch_document(item.path, Path(item.path).stat().st_mtime)
            _done(report, notify, item)
            continue
        report.ocr_seconds += item.ocr.seconds
        report.ocr_engine = report.ocr_engine or item.ocr.engine
        pending.append(item)
        if sum(len(p.chunks) for p in pending) >= BATCH_CHUNKS:
            _write(store, model, pending, report, notify)
            pending = []
    _write(store, model, pending, report, notify)


def _parsed(todo, known, count_tokens, parse: ParseSettings, notify) -> Iterator[_Parsed | FileResult]:
    """Parse results in file order. Large jobs, and jobs with images to OCR, parse in a child process a few
    files ahead of the embedder: a thread would fight the main thread for the GIL (every SQLite row and
    torch call hands it over)."""
    images = sum(1 for path, _ in todo if path.suffix.lower() in IMAGE_SUFFIXES)
    small = len(todo) < PROCESS_MIN_FILES and sum(st.st_size for _, st in todo) < PROCESS_MIN_BYTES
    if small and not (images and len(todo) > 1):
        def on_page(path: Path) -> Callable[[int, int], None]:
            return lambda page, total: notify(Progress("page", total=total, path=str(path), page=page))

        for path, st in todo:
            yield _parse_one(path, st, known.get(str(path)), count_tokens, parse, on_page(path))
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    pages = context.Queue()
    with ProcessPoolExecutor(1, mp_context=context, initializer=_init_child, initargs=(count_tokens, pages)) as pool:
        in_flight: deque = deque()
        for path, st in todo:
            in_flight.append(pool.submit(_parse_in_child, path, st, known.get(str(path)), parse))
            if len(in_flight) >= PARSE_AHEAD:
                yield _result(in_flight.popleft(), pages, notify)
        while in_flight:
            yield _result(in_flight.popleft(), pages, notify)


def _result(future: Future, pages, notify):
    """The child's result for one file; meanwhile, the pages it reports OCR'd go to the progress display."""
    while True:
        done = future.done()
        while True:
            try:
                path, page, total = pages.get_nowait()
            except queue.Empty:
                break
            notify(Progress("page", total=total, path=path, page=page))
        if done:
            return future.result()
        wait([future], timeout=0.25)


_child_counter = None
_child_pages = None


def _init_child(count_tokens, pages) -> None:
    global _child_counter, _child_pages
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    _child_counter = count_tokens
    _child_pages = pages


def _parse_in_child(path: Path, st, old, parse: ParseSettings):
    def on_page(page: int, total: int) -> None:
        _child_pages.put((str(path), page, total))

    return _parse_one(path, st, old, _child_counter, parse, on_page)


def _parse_one(path: Path, st, old, count_tokens, parse: ParseSettings, on_page=None):
    try:
        digest = file_hash(path)
    except OSError as e:
        return FileResult(str(path), "failed", reason=f"cannot read: {e.strerror or e}")
    if old and old[0] == digest:
        return FileResult(str(path), "unchanged")
    ocr = OcrRun(parse.ocr, on_page)
    try:
        elements = load(path, parse.limits, ocr)
    except ParseError as e:
        return FileResult(str(path), "failed", reason=e.reason, ocr_pages=ocr.pages)
    ocr.on_page = None  # a callback does not cross back from the child process
    title = document_title(path, elements)
    text, drafts = split_document(elements, count_tokens, parse.max_tokens, parse.overlap_tokens, title)
    doc_id = doc_id_for(str(path))
    chunks = [
        Chunk(chunk_id_for(doc_id, i, d.text), doc_id, i, d.text, d.section, d.page, d.char_start, d.char_end)
        for i, d in enumerate(drafts)
    ]
    info = DocumentInfo(doc_id, str(path), title, digest, st.st_size, st.st_mtime, len(chunks), time.time(),
                        path.suffix.lower().lstrip("."))
    return _Parsed(path, info, text, chunks, [c.embedding_text(title) for c in chunks], old is not None, ocr)


def _write(store: Store, model: Embedder, pending: list[_Parsed], report: IngestReport, notify) -> None:
    if not pending:
        return
    texts = [t for p in pending for t in p.keyword_texts]
    vectors = model.encode(texts)
    notify(Progress("embedded", chunks=len(texts)))
    records, offset = [], 0
    for p in pending:
        n = len(p.chunks)
        records.append(Record(p.info, p.text, p.chunks, vectors[offset:offset + n], [index_text(t) for t in p.keyword_texts]))
        offset += n
    report.chunks_removed += store.put_documents(records)
    for p in pending:
        report.chunks_added += len(p.chunks)
        _done(report, notify, FileResult(str(p.path), "updated" if p.previous else "added", len(p.chunks),
                                         ocr_pages=p.ocr.pages, unread_pages=p.ocr.unread))
