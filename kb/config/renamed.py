"""Settings that moved to a new name keep working under the old one: one notice per old name and process."""

from __future__ import annotations

import sys

_told: set[str] = set()  # old names already reported in this process (a settings file is read many times)


def tell_renamed(old: str, new: str) -> None:
    """Say once per process, on stderr, that setting `old` is now `new`."""
    if old not in _told:
        _told.add(old)
        print(f"kb: setting {old} is now {new}; the old name still works", file=sys.stderr)
