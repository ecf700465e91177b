"""Uploads from the browser: each file checked (size, emptiness) and stored with kb.uploads, which
keeps it in `$KB_HOME/uploads/<kb>/` under a safe name; a refused file gets a reason instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kb.config import Settings
from kb.errors import KBError
from kb.uploads import store_upload, too_large, upload_dir


@dataclass(frozen=True)
class Saved:
    """One uploaded file: where it was written, or why it was not."""

    name: str  # as the browser sent it
    path: Path | None
    reason: str = ""


def save_upload(settings: Settings, kb_name: str, name: str, data: bytes) -> Saved:
    """Write one upload into the KB's upload folder under its safe name; refuse empty files and files over the
    upload limit (server.max_upload_mb)."""
    reason = too_large(name, len(data), settings)
    if reason:
        return Saved(name, None, reason)
    if not data:
        return Saved(name, None, "the file is empty")
    try:
        return Saved(name, store_upload(upload_dir(settings, kb_name), name, data))
    except KBError as e:
        return Saved(name, None, str(e))
