"""A knowledge base's manifest: the format version, the embedders and the chunking it was built with.

Every store keeps one (the local store as manifest.json in the KB folder, the Milvus store in its
registry) and checks it on open with `check`, so that a KB is never searched with another embedder's
vectors or read by a kb that does not know its format.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kb.config import DEFAULT_EMBEDDER
from kb.errors import IndexFormatError

FORMAT = "kb-index"
VERSION = 1


def new(embedder, chunking: dict[str, Any], ensemble: Sequence[Any] = ()) -> dict[str, Any]:
    """The manifest of a new KB built with this embedder (a loaded Embedder), the other embedders of its ensemble
    (each with its own dense index; kb/retrieval/hybrid.py fuses them) and chunking settings."""
    data = {
        "format": FORMAT,
        "version": VERSION,
        "embedder": entry(embedder),
        "chunking": chunking,
        "created_at": time.time(),
    }
    if ensemble:  # absent in KBs of one embedder, as in those built before ensembles existed
        data["ensemble"] = [entry(e) for e in ensemble]
    return data


def entry(embedder) -> dict[str, Any]:
    """What a manifest records of one embedder."""
    return {"model": embedder.model_id, "dim": embedder.dim, "max_seq_length": embedder.max_seq_length,
            "query_prefix": embedder.query_prefix, "passage_prefix": embedder.passage_prefix,
            "backend": embedder.backend, "normalized": True}


def ensemble_dims(data: dict[str, Any]) -> dict[str, int]:
    """The other embedders of a KB's ensemble: model -> vector dimension."""
    return {e["model"]: e["dim"] for e in data.get("ensemble", [])}


def pinned(built: dict[str, Any]) -> dict[str, str]:
    """The embedding settings a KB's main embedder entry (`built`, the manifest's "embedder") pins: model
    and prefixes."""
    return {"model": built["model"], "query_prefix": built.get("query_prefix", ""),
            "passage_prefix": built.get("passage_prefix", "")}


def embedder_mismatch(built: dict[str, Any], want) -> list[str]:
    """The embedder rule: a KB keeps the model it was built with (`built`, the manifest's "embedder"), and
    only a model or prefix named explicitly in `want` (EmbeddingSettings) that differs from it is an error.
    Returns those fields, sorted ([]: none). Used by KnowledgeBase.embedder() (kb/handle.py) and
    `kb doctor` (kb/doctor/kbs.py).

    Named means set in a config file, a KB_* variable or code, and not to kb's default model or to the
    model's own prefixes (None): copies of the settings (the app's) carry those without choosing."""
    mine = pinned(built)
    named = {f for f in mine if f in want.model_fields_set and getattr(want, f) is not None}
    if want.model == DEFAULT_EMBEDDER:
        named.discard("model")
    return [f for f in sorted(named) if getattr(want, f) != mine[f]]


def models(data: dict[str, Any]) -> list[str]:
    """Every embedder a KB was built with, the main one first."""
    return [data["embedder"]["model"], *(e["model"] for e in data.get("ensemble", []))]


def check(data: Any, where: str) -> dict[str, Any]:
    """`data` if it is a manifest this kb reads, else IndexFormatError naming `where` and the fix."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IndexFormatError(f"{where} is not a kb manifest (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise IndexFormatError(
            f"{where} has format version {data.get('version')!r}; this kb reads version {VERSION}. "
            "Upgrade kb, or rebuild the KB with `kb ingest --rebuild`."
        )
    emb = data.get("embedder")
    if not isinstance(emb, dict) or not isinstance(emb.get("model"), str) or not isinstance(emb.get("dim"), int):
        raise IndexFormatError(f"{where} has no valid \"embedder\" entry (model, dim)")
    ensemble = data.get("ensemble", [])
    if not isinstance(ensemble, list) or not all(
            isinstance(e, dict) and isinstance(e.get("model"), str) and isinstance(e.get("dim"), int) for e in ensemble):
        raise IndexFormatError(f"{where} has an invalid \"ensemble\" entry (a list of embedders: model, dim)")
    return data


def parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{where} is not valid JSON ({e}); restore it or rebuild the KB") from e
    return check(data, where)


def read(folder: Path) -> dict[str, Any]:
    """The manifest.json of a local KB folder."""
    path = folder / "manifest.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise IndexFormatError(f"{path} is missing; this folder is not a kb knowledge base") from e
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{path} is not valid JSON ({e}); restore it or rebuild the KB") from e
    return parse(text, str(path))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write, fsync, rename, fsync the folder: the file is either the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
