"""The format of an adapter folder `kb finetune` writes, read at answer time and when merging.

peft writes `adapter_config.json` and `adapter_model.safetensors`; kb adds `kb_finetune.json`: the
format version, the method, the base model and the shape of its config (`base_signature`), so an
adapter trained on another model is refused with both names rather than a tensor error. This module
leaves out peft itself (adapters.py applies and merges, finetune_checkpoint.py writes).
"""

from __future__ import annotations

import json
from pathlib import Path

from kb.errors import ModelError

ADAPTER_MANIFEST = "kb_finetune.json"
FORMAT_VERSION = 1
SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def base_signature(config) -> dict:
    """The config fields an adapter depends on."""
    return {k: getattr(config, k, None) for k in SIGNATURE_KEYS}


def read_adapter(path: str | Path) -> dict:
    """The adapter's kb_finetune.json (or {} for a plain peft folder); ModelError if it is not an adapter."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"adapter folder {folder} does not exist; set llm.adapter to the folder `kb finetune --out` wrote")
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"{folder} is not a peft adapter (no adapter_config.json); point llm.adapter at the "
                         "folder `kb finetune --out` wrote, not at a checkpoint-N parent or a model")
    manifest_path = folder / ADAPTER_MANIFEST
    if not manifest_path.is_file():
        return {}
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{manifest_path} has format version {manifest.get('format_version')!r}; this kb reads "
                         f"version {FORMAT_VERSION}; upgrade kb or fine-tune again")
    return manifest


def check_matches(manifest: dict, model, folder: Path) -> None:
    """Refuse an adapter trained on a model of another shape, naming both."""
    want = manifest.get("base")
    have = base_signature(model.config)
    if want and want != have:
        diff = ", ".join(f"{k} {want.get(k)} vs {have.get(k)}" for k in SIGNATURE_KEYS if want.get(k) != have.get(k))
        raise ModelError(f"adapter {folder} was trained on {manifest.get('base_model')!r}, which does not match the "
                         f"loaded model ({diff}); set llm.model to that base model or train a new adapter")
