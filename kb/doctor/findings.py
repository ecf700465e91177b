"""The data `kb doctor` returns: a `Finding` per checked fact, and the small helpers its checks share.

A leaf module: kb/doctor/__init__.py and the check modules it runs (doctor_models, doctor_chat, doctor_kbs) import
it, and it imports nothing of theirs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Level = Literal["ok", "warn", "error"]
LEVELS: tuple[Level, ...] = ("ok", "warn", "error")
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


@dataclass(frozen=True)
class Finding:
    """One checked fact: where it belongs, how it stands, and (for warn and error) what fixes it."""

    section: str  # system, embedder, chat model, extras, knowledge bases
    name: str  # what was checked: "torch", "embedder", "kb demo", "kb demo: index"
    level: Level
    summary: str  # one line for a person
    fix: str = ""  # the command or setting that fixes it; every warn and error has one
    facts: dict[str, Any] = field(default_factory=dict)  # machine-readable details

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a broken spec
        return False


def languages_text(languages: tuple[str, ...] | list[str]) -> str:
    """('zh', 'en') -> 'Chinese and English'."""
    return " and ".join(LANGUAGE_NAMES.get(code, code) for code in languages) or "no known language"


def split_fix(error: Exception) -> tuple[str, str]:
    """(what is wrong, the fix) from a kb error message, which says both, parted by its first '; '."""
    text = str(error)
    what, _, fix = text.partition("; ")
    return (what, fix) if fix else (text, text)
