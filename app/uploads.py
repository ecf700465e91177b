"""Uploads from the browser: each file checked (size, emptiness) and stored with kb.uploads, which
keeps it in `$KB_HOME/uploads/<kb>/` under a safe name; a refused file gets a reason instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kb.errors import KBError
from kb.uploads import store_upload


@dataclass(frozen=True)
class Saved:
    """One uploaded file: where it was written, or why it was not."""

    name: str  # as the browser sent it
    path: Path | None
    reason: str = ""


def save_upload(folder: Path, name: str, data: bytes, max_bytes: int) -> Saved:
    """Write one upload into `folder` under its safe name; refuse empty files and files over `max_bytes`."""
    if len(data) > max_bytes:
        return Saved(name, None, f"larger than the upload limit of {max_bytes / (1 << 20):g} MB "
                                 "(server.max_upload_mb)")
    if not data:
        return Saved(name, None, "the file is empty")
    try:
        return Saved(name, store_upload(folder, name, data))
    except KBError as e:
        return Saved(name, None, str(e))
