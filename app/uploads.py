"""Where uploaded files are kept, and how their names are made safe.

Each KB's uploads live in `$KB_HOME/uploads/<kb name>/` (beside the index, not inside it: a rebuild
swaps the index folder). A browser sends any name it likes, so only the last path component is kept,
control characters, separators and leading dots are dropped, and the final path is checked to lie in
the KB's upload folder: no upload can write anywhere else. A file of the same name replaces the
earlier upload, which kb then re-indexes as an update.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from kb import Settings

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
MAX_NAME_BYTES = 200


def upload_dir(settings: Settings, kb_name: str) -> Path:
    """The folder that holds the files uploaded into one knowledge base."""
    return settings.home_dir / "uploads" / kb_name


def safe_name(name: str) -> str:
    """A file name with no directory part, control characters or leading dots ('upload' if nothing is left)."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if name in ("", ".", ".."):
        return "upload"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # most file systems allow 255 bytes
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 16:
            stem, suffix = name, ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return name


@dataclass(frozen=True)
class Saved:
    """One uploaded file: where it was written, or why it was not."""

    name: str  # as the browser sent it
    path: Path | None
    reason: str = ""


def save_upload(folder: Path, name: str, data: bytes, max_bytes: int) -> Saved:
    """Write one upload into `folder` under its safe name; refuse files over `max_bytes`."""
    if len(data) > max_bytes:
        return Saved(name, None, f"larger than the upload limit of {max_bytes / 1e6:.0f} MB "
                                 "(server.max_upload_mb)")
    if not data:
        return Saved(name, None, "the file is empty")
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / safe_name(name)).resolve()
    if target.parent != folder.resolve():
        return Saved(name, None, "unsafe file name")
    tmp = target.with_name(f".{target.name}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return Saved(name, None, f"could not be saved: {e.strerror or e}")
    return Saved(name, target)
