"""Settings that moved to a new name keep working under the old one: one table (RENAMED, old -> new dotted
names) and one notice per old name and process. `move_renamed` applies the table to a section's raw values
before validation; kb/config/__init__.py (Settings) and kb/config/llm.py (LLMSettings, also built alone) call it.
"""

from __future__ import annotations

import sys
from typing import Any

# Old dotted name -> new dotted name. An old name wins over its new one when both are given, because merged
# sources put an override (KB_LLM__BASE_URL, a keyword) next to the file's value.
RENAMED: dict[str, str] = {
    "llm.repeat_penalty": "llm.gguf.repeat_penalty",
    "llm.no_repeat_ngram": "llm.gguf.no_repeat_ngram",
    "llm.device": "llm.transformers.device",
    "llm.quantize": "llm.transformers.quantize",
    "llm.dtype": "llm.transformers.dtype",
    "llm.prefill_chunk": "llm.transformers.prefill_chunk",
    "llm.cache_dir": "llm.chatglm2.cache_dir",
    "llm.trust_remote_code": "llm.hf.trust_remote_code",
    "llm.base_url": "llm.openai.base_url",
    "llm.api_key": "llm.openai.api_key",
    "answer.passages": "retrieval.k",
    "answer.min_score": "retrieval.threshold",
}

_told: set[str] = set()  # old names already reported in this process (a settings file is read many times)


def tell_renamed(old: str, new: str) -> None:
    """Say once per process, on stderr, that setting `old` is now `new`."""
    if old not in _told:
        _told.add(old)
        print(f"kb: setting {old} is now {new}; the old name still works", file=sys.stderr)


def renamed_within(section: str) -> dict[str, str]:
    """The entries of RENAMED inside `section` (e.g. 'llm'), with names relative to it."""
    cut = len(section) + 1
    return {old[cut:]: new[cut:] for old, new in RENAMED.items()
            if old.startswith(section + ".") and new.startswith(section + ".")}


def _as_dict(value: Any) -> dict | None:
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "model_fields_set"):  # a settings model given whole: its explicitly set values (read
        return {k: getattr(value, k) for k in value.model_fields_set}  # as attributes: old names are excluded from dumps
    return None


def move_renamed(data: Any, section: str = "") -> Any:
    """`data` (the raw values of `section`, '' for the whole settings) with every old name of RENAMED found in
    it moved to its new name, with the notice. An unset (None) old value is left where it is."""
    table = renamed_within(section) if section else RENAMED
    if not isinstance(data, dict):
        return data
    for old, new in table.items():
        *old_parents, old_key = old.split(".")
        holder = data
        for key in old_parents:
            holder = _as_dict(holder.get(key)) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or holder.get(old_key) is None:
            continue
        data = dict(data)
        value = _pop(data, old_parents, old_key)
        _put(data, new.split("."), value)
        tell_renamed(f"{section}.{old}" if section else old, f"{section}.{new}" if section else new)
    return data


def _pop(data: dict, parents: list[str], key: str) -> Any:
    """Remove parents/key from `data` (copying each dict on the way) and return its value."""
    if not parents:
        return data.pop(key)
    child = _as_dict(data[parents[0]])
    data[parents[0]] = child
    return _pop(child, parents[1:], key)


def _put(data: dict, path: list[str], value: Any) -> None:
    """Set path to `value` in `data`, copying (or creating) each dict on the way."""
    if len(path) == 1:
        data[path[0]] = value
        return
    child = _as_dict(data.get(path[0])) or {}
    data[path[0]] = child
    _put(child, path[1:], value)
