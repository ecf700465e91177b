"""Files that users upload through the web app or the HTTP API: where they are kept, how they are named, and
the one rule both faces follow (`add_uploads`): a file of a type kb cannot read, an empty one or one over
server.max_upload_mb is refused with the reason before anything is written; the rest are stored and ingested,
and a new file that failed to ingest is deleted again, so nothing is left behind that the KB does not hold.
Deleting a KB or a document takes its uploads with it.

Each KB's uploads live in `$KB_HOME/uploads/<kb name>/`, beside the index rather than inside it: a
rebuild swaps the index folder, which would take the files with it. A client sends any name it likes,
so only its last path component is kept, control characters, reserved characters and leading dots are
dropped, and the final path (symlinks resolved) must lie in the KB's upload folder: no upload can write
anywhere else. A file of the same name replaces the earlier upload, which kb then re-indexes as an update.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kb.config import Settings
from kb.errors import KBError, StorageError, UploadRefused
from kb.handle import check_name
from kb.ingest.loaders import supported_suffixes
from kb.ingest.report import IngestReport
from kb.knowledge_base import KnowledgeBase
from kb.types import DocumentInfo

MAX_NAME_BYTES = 200  # most file systems allow 255 bytes; leave room for the '.part' temp name
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


def upload_dir(settings: Settings, kb_name: str) -> Path:
    """The folder that holds the files uploaded into one knowledge base."""
    return settings.home_dir / "uploads" / check_name(kb_name)


def upload_limit(settings: Settings) -> int:
    """The largest upload accepted, in bytes (server.max_upload_mb, in MiB)."""
    return int(settings.server.max_upload_mb * (1 << 20))


def too_large(name: str, size: int, settings: Settings) -> str | None:
    """Why a file of `size` bytes is refused (naming the setting), or None when it is within the limit."""
    if size <= upload_limit(settings):
        return None
    return f"{name} is {size / (1 << 20):.1f} MB, more than server.max_upload_mb={settings.server.max_upload_mb:g}"


def delete_kb(settings: Settings, name: str) -> None:
    """Delete a KB and the files uploaded into it (ingested folders of the user's own stay where they are)."""
    KnowledgeBase.delete(name, settings)
    shutil.rmtree(upload_dir(settings, name), ignore_errors=True)


def remove_document(kb: KnowledgeBase, target: str) -> list[DocumentInfo]:
    """Remove a document (by id or path) from `kb`; a file that was uploaded into it goes too (an upload exists
    only for its KB; a user's own file is kept). Returns what was removed."""
    removed = kb.remove(target)
    uploads = upload_dir(kb.settings, kb.name).resolve()
    for d in removed:
        if Path(d.path).parent == uploads:
            Path(d.path).unlink(missing_ok=True)
    return removed


def safe_name(raw: str | None) -> str:
    """A file name with no directory part, control or reserved characters, or leading dots."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if not name:
        raise KBError(f"the upload has no usable file name ({raw!r}); send it with a name such as report.pdf")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 16:
            stem, suffix = name, ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return name


def store_upload(folder: Path, raw_name: str | None, data: bytes | BinaryIO) -> Path:
    """Write one upload into `folder` under its safe name (temp file, then rename); its resolved path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / safe_name(raw_name)).resolve()
    if target.parent != folder.resolve():  # a symlink planted in the folder, or a name that escaped
        raise KBError(f"the upload name {raw_name!r} points outside {folder}; rename the file")
    part = target.with_name(f".{target.name}.part")
    try:
        with part.open("wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, 1 << 20)
        os.replace(part, target)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise StorageError(f"cannot save the upload {target.name} in {folder} ({e.strerror or e}); "
                           "free disk space and send it again") from e
    return target


@dataclass(frozen=True)
class UploadResult:
    """What became of one uploaded file."""

    filename: str  # as the client sent it
    path: Path | None  # where it is kept; None when it was refused or deleted after a failed ingest
    status: str  # refused | added | updated | unchanged | failed
    chunks: int = 0
    reason: str = ""
    ocr_pages: int = 0


@dataclass(frozen=True)
class UploadReport:
    """The files of one upload, and the ingest's report (None when every file was refused)."""

    files: list[UploadResult] = field(default_factory=list)
    ingest: IngestReport | None = None


def refusal(name: str | None, size: int | None, settings: Settings) -> UploadRefused | None:
    """Why an upload is refused before it is stored (a type kb cannot read: 415, over the size limit: 413, empty
    or unnamed: 400), or None. `size` None: not known yet (checked again once stored)."""
    try:
        safe = safe_name(name)
    except KBError as e:
        return UploadRefused(str(e), 400)
    suffix = Path(safe).suffix.lower()
    if suffix not in supported_suffixes():
        return UploadRefused(f"unsupported file type '{suffix or '(none)'}' ({safe}); kb reads "
                             + ", ".join(sorted(supported_suffixes())), 415)
    reason = too_large(safe, size, settings) if size is not None else None
    if reason:
        return UploadRefused(reason, 413)
    if size == 0:
        return UploadRefused(f"{safe} is empty; send the file with its content", 400)
    return None


def add_uploads(kb: KnowledgeBase, files: Sequence[tuple[str | None, bytes | BinaryIO, int | None]],
                progress: Callable[[Any], None] | None = None, refuse_all: bool = False) -> UploadReport:
    """Store the uploaded files (name as sent, content, size if known) in the KB's upload folder and ingest them.
    Refused files get their reason (`refuse_all`: the first refusal is raised and nothing is stored); a file that
    failed to ingest and that the KB did not hold before is deleted again."""
    results: dict[int, UploadResult] = {}
    for i, (name, data, size) in enumerate(files):
        size = len(data) if isinstance(data, bytes) else size
        refused = refusal(name, size, kb.settings)
        if refused is not None:
            if refuse_all:
                raise refused
            results[i] = UploadResult(name or "", None, "refused", reason=str(refused))
    accepted = [i for i in range(len(files)) if i not in results]
    if not accepted:
        return UploadReport([results[i] for i in range(len(files))])
    folder = upload_dir(kb.settings, kb.name)
    paths = {i: store_upload(folder, files[i][0], files[i][1]) for i in accepted}
    known = {d.path for d in kb.documents()}
    report = kb.ingest(*paths.values(), progress=progress)
    by_path = {str(Path(r.path).resolve()): r for r in report.files}
    for i, path in paths.items():
        r = by_path.get(str(path.resolve()))
        status, chunks, reason = (r.status, r.chunks, r.reason) if r else ("failed", 0, "not ingested")
        kept: Path | None = path
        if status in ("failed", "unsupported") and str(path.resolve()) not in known:
            path.unlink(missing_ok=True)  # nothing of it is in the KB: keep no orphan file
            status, kept = "failed", None
        results[i] = UploadResult(files[i][0] or path.name, kept, status, chunks, reason, r.ocr_pages if r else 0)
    return UploadReport([results[i] for i in range(len(files))], report)
