"""Parse and split files for the ingest run, in file order: in this process for small jobs, else in a
child process a few files ahead of the embedder (a thread would fight the main thread for the GIL: every
SQLite row and torch call hands it over). Jobs with images to OCR use the child too; it sends each OCR'd
page back through a queue for the progress display. Unchanged files (same content hash) come back as
FileResult("unchanged"), files that cannot be parsed as FileResult("failed", reason)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from kb.errors import ParseError
from kb.types import Chunk, DocumentInfo, DocumentState

from .loaders import Limits, document_title, load
from .ocr import IMAGE_SUFFIXES, OcrOptions, OcrRun
from .orphans import die_with_parent
from .report import FileResult, Progress
from .split import TokenCounter, split_document

PARSE_AHEAD = 3  # files parsed ahead of the embedder in the child process
PROCESS_MIN_FILES = 20  # smaller jobs parse in-process: starting a child costs a few seconds
PROCESS_MIN_BYTES = 2_000_000


@dataclass(frozen=True)
class ParseSettings:
    """How each file is parsed and split, the same in the main and the child process."""

    max_tokens: int
    overlap_tokens: int
    limits: Limits = Limits()
    ocr: OcrOptions = OcrOptions()


@dataclass(frozen=True)
class FileToParse:
    """A file the run parses: its size and mtime when it was listed, and the store's state of it (None: new)."""

    path: Path
    size: int
    mtime: float
    stored: DocumentState | None


@dataclass
class Parsed:
    """One parsed and split file, ready to embed and write."""

    path: Path
    info: DocumentInfo
    text: str
    chunks: list[Chunk]
    keyword_texts: list[str]
    previous: bool  # replaces an older version
    ocr: OcrRun


def doc_id_for(path: str) -> str:
    """The document id of a file: a hash of its path, so a re-ingest replaces the same document."""
    return hashlib.blake2b(path.encode("utf-8"), digest_size=8).hexdigest()


def chunk_id_for(doc_id: str, ordinal: int, text: str) -> int:
    """A chunk's id, a positive int64: a hash of its document, place and text."""
    digest = hashlib.blake2b(f"{doc_id}:{ordinal}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def file_hash(path: Path) -> str:
    """The hash of a file's bytes (blake2b, 128 bits, hex): a file whose content is unchanged is skipped."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parsed(todo: list[FileToParse], count_tokens: TokenCounter, parse: ParseSettings,
           notify: Callable[[Progress], None]) -> Iterator[Parsed | FileResult]:
    """Parse results in file order (see the module docstring for where they are parsed)."""
    images = sum(1 for f in todo if f.path.suffix.lower() in IMAGE_SUFFIXES)
    small = len(todo) < PROCESS_MIN_FILES and sum(f.size for f in todo) < PROCESS_MIN_BYTES
    if small and not (images and len(todo) > 1):
        def on_page(path: Path) -> Callable[[int, int], None]:
            return lambda page, total: notify(Progress("page", total=total, path=str(path), page=page))

        for f in todo:
            yield _parse_one(f, count_tokens, parse, on_page(f.path))
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    pages = context.Queue()
    # The worker starts in this thread (see ingest/orphans.py), which outlives it: the `with` joins it.
    with ProcessPoolExecutor(1, mp_context=context, initializer=_init_child,
                             initargs=(os.getpid(), count_tokens, pages)) as pool:
        in_flight: deque = deque()
        for f in todo:
            in_flight.append(pool.submit(_parse_in_child, f, parse))
            if len(in_flight) >= PARSE_AHEAD:
                yield _result(in_flight.popleft(), pages, notify)
        while in_flight:
            yield _result(in_flight.popleft(), pages, notify)


def _result(future: Future, pages, notify: Callable[[Progress], None]) -> Parsed | FileResult:
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


def _init_child(parent_pid: int, count_tokens, pages) -> None:
    global _child_counter, _child_pages
    die_with_parent(parent_pid)  # a killed ingest must not leave this process behind
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    _child_counter = count_tokens
    _child_pages = pages


def _parse_in_child(file: FileToParse, parse: ParseSettings) -> Parsed | FileResult:
    def on_page(page: int, total: int) -> None:
        _child_pages.put((str(file.path), page, total))

    return _parse_one(file, _child_counter, parse, on_page)


def _parse_one(file: FileToParse, count_tokens: TokenCounter, parse: ParseSettings,
               on_page: Callable[[int, int], None] | None = None) -> Parsed | FileResult:
    path, old = file.path, file.stored
    try:
        digest = file_hash(path)
    except OSError as e:
        return FileResult(str(path), "failed", reason=f"cannot read: {e.strerror or e}")
    if old and old.content_hash == digest:
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
    info = DocumentInfo(doc_id, str(path), title, digest, file.size, file.mtime, len(chunks), time.time(),
                        path.suffix.lower().lstrip("."))
    return Parsed(path, info, text, chunks, [c.embedding_text(title) for c in chunks], old is not None, ocr)
