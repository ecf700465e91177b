"""The ingest run: find files -> skip unchanged -> parse + split (a child process) -> embed -> write.

For large jobs (and any job with images to OCR), parsing runs in a child process a few files ahead while
the main process embeds and writes, so parsing and OCR overlap the embedder (and the KB's other embedders,
each on the chunks it can read); the child reports each
OCR'd page back through a queue, for the progress display. Embedding batches span documents, so a folder of
tiny files still fills the model's batches. Each document is written in its own transaction as soon
as its vectors exist: a run that is killed keeps every document it finished, and the next run picks
up the rest. A file that fails to parse is reported and skipped; an older version of it stays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kb.errors import KBError
from kb.stores import Record, SideVectors, Store
from kb.text.keywords import index_text

from .embed import Embedder
from .loaders import Limits, supported_suffixes
from .ocr import OcrOptions, available
from .parse import FileToParse, Parsed, ParseSettings, parsed
from .report import FileResult, IngestReport, Progress

__all__ = ["run_ingest", "discover", "Discovered", "FileResult", "IngestReport", "Progress"]

BATCH_CHUNKS = 512  # chunks per encode call across documents (sorted by length inside the call)


class Discovered(NamedTuple):
    """What `discover` found: files kb reads, files it does not, and folders that could not be listed."""

    files: list[Path]
    unsupported: list[Path]
    unlisted: list[OSError]


def discover(paths: Iterable[Path]) -> Discovered:
    """The files under the given files/folders, sorted; hidden entries skipped, symlinks to files followed,
    folder symlinks not (no loops)."""
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
    return Discovered(sorted(found.values()), unsupported, unlisted)


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
    ensemble: Callable[[], list[Embedder]] = list,
) -> IngestReport:
    """Bring the store up to date with the files under `roots`. The caller holds the write lock. `ensemble` gives
    the KB's other embedders (each embeds the chunks it can read into its own index)."""
    started = time.perf_counter()
    notify = progress or (lambda event: None)
    report = IngestReport()
    files, unsupported, unlisted = discover(roots)
    report.files.extend(FileResult(str(p), "unsupported", reason=f"unsupported file type '{p.suffix}'")
                        for p in unsupported)
    report.files.extend(FileResult(str(e.filename), "failed", reason=f"cannot list folder: {e.strerror or e}")
                        for e in unlisted)
    store.catch_up(lambda what, done, total: notify(Progress(what, total=total, chunks=done)))
    known = store.document_states()
    notify(Progress("start", total=len(files)))

    todo: list[FileToParse] = []
    for p in files:
        try:
            st = p.stat()
        except OSError as e:  # a looping or dangling link, or a file deleted since the folder was listed
            _done(report, notify, FileResult(str(p), "failed", reason=f"cannot read: {e.strerror or e}"))
            continue
        old = known.get(str(p))
        if old and old.size == st.st_size and old.mtime == st.st_mtime:
            _done(report, notify, FileResult(str(p), "unchanged"))
        else:
            todo.append(FileToParse(p, st.st_size, st.st_mtime, old))

    if todo:
        parse = ParseSettings(max_tokens, overlap_tokens, limits or Limits(), ocr or OcrOptions())
        _embed_and_write(store, embedder, ensemble, todo, report, notify, parse)
        if report.unread_pages:
            report.ocr_missing = available(parse.ocr).why

    present = {str(p) for p in files}
    gone = [path for path in known if path not in present and _under(path, roots)]
    if prune and gone:
        report.chunks_removed += store.remove_documents(known[path].doc_id for path in gone)
        for path in gone:
            _done(report, notify, FileResult(path, "removed"))
    else:
        report.missing = gone
    if report.changed or not store.finished():
        store.finish()
    report.seconds = time.perf_counter() - started
    return report


def _done(report: IngestReport, notify: Callable[[Progress], None], result: FileResult) -> None:
    report.files.append(result)
    notify(Progress("file", result=result))


def _under(path: str, roots: list[Path]) -> bool:
    for root in roots:
        r = str(root.resolve())
        if path == r or path.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def _embed_and_write(store: Store, embedder_factory: Callable[[], Embedder], ensemble: Callable[[], list[Embedder]],
                     todo: list[FileToParse], report: IngestReport, notify: Callable[[Progress], None],
                     parse: ParseSettings) -> None:
    model = embedder_factory()
    others = ensemble()
    pending: list[Parsed] = []
    for item in parsed(todo, model.token_counter, parse, notify):
        if isinstance(item, FileResult):
            if item.status == "unchanged":
                store.touch_document(item.path, Path(item.path).stat().st_mtime)
            _done(report, notify, item)
            continue
        report.ocr_seconds += item.ocr.seconds
        report.ocr_engine = report.ocr_engine or item.ocr.engine
        pending.append(item)
        if sum(len(p.chunks) for p in pending) >= BATCH_CHUNKS:
            _write(store, model, others, pending, report, notify)
            pending = []
    _write(store, model, others, pending, report, notify)


def _write(store: Store, model: Embedder, others: list[Embedder], pending: list[Parsed], report: IngestReport,
           notify: Callable[[Progress], None]) -> None:
    if not pending:
        return
    texts = [t for p in pending for t in p.keyword_texts]
    vectors = model.encode(texts)
    sides = [_side_vectors(other, texts) for other in others]
    notify(Progress("embedded", chunks=len(texts)))
    records, offset = [], 0
    for p in pending:
        n = len(p.chunks)
        ensemble = {other.model_id: _rows_of(side, offset, n) for other, side in zip(others, sides)}
        records.append(Record(p.info, p.text, p.chunks, vectors[offset:offset + n],
                              [index_text(t) for t in p.keyword_texts], ensemble, p.ocr.lines))
        offset += n
    report.chunks_removed += store.put_documents(records)
    for p in pending:
        report.chunks_added += len(p.chunks)
        _done(report, notify, FileResult(str(p.path), "updated" if p.previous else "added", len(p.chunks),
                                         ocr_pages=p.ocr.pages, unread_pages=p.ocr.unread))


def _side_vectors(model: Embedder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, vectors) of the texts an ensemble member embeds: those it can mostly read (an English-only
    model skips Chinese chunks, whose tokens it does not know)."""
    rows = np.asarray([i for i, t in enumerate(texts) if model.reads(t)], dtype=np.int64)
    return rows, model.encode([texts[i] for i in rows])


def _rows_of(side: tuple[np.ndarray, np.ndarray], offset: int, n: int) -> SideVectors:
    """One document's share of a batch's side vectors (its chunks are positions offset .. offset + n)."""
    rows, vectors = side
    mine = (rows >= offset) & (rows < offset + n)
    return SideVectors(tuple(int(r) - offset for r in rows[mine]), vectors[mine])
