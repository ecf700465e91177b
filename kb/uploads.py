"""Files that users upload through the web app or the HTTP API: where they are kept, how they are named, and
the operations both faces share (the size limit, deleting a KB or a document together with its uploads).

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
from pathlib import Path
from typing import BinaryIO

from kb.config import Settings
from kb.errors import KBError, StorageError
from kb.handle import check_name
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
