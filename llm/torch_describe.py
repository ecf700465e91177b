"""What the two transformers backends (chatglm2, hf) say about a model folder without loading it.

A folder is described from its config.json: found or not (the folder, its weights, transformers and, for an
adapter, peft), and its context window by the rule the backend hands in (llm/chatglm2.py's config_window, llm/hf.py's
the config's max_position_embeddings). Whether torch imports and CUDA is visible is left to the caller (kb/doctor/chat.py),
which knows the machine; the description gives it the device setting to check.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from kb.errors import MissingDependencyError, ModelError
from kb.llm.base import BackendInfo, not_found
from kb.llm.chatglm2_convert import weight_files


def hf_cached(name: str) -> str | None:
    """The local folder of a Hugging Face model name already in the cache, else None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo name
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def describe_folder(settings, name: str, window: Callable[[dict], int], cached_names: bool = False) -> BackendInfo:
    """A transformers backend's model folder (llm.model; with `cached_names`, also a model name in the HF cache),
    its window by the backend's rule `window(config.json's dict)`."""
    if not settings.model:
        return not_found(name, f"llm.backend is {name} but llm.model is empty", "set llm.model to the model folder")
    folder = Path(settings.model).expanduser()
    if not folder.is_dir():
        cached = hf_cached(settings.model) if cached_names else None
        if not cached:
            return not_found(name, f"llm.model {settings.model} is not a folder",
                             "fix llm.model (the downloaded model folder)")
        folder = Path(cached)
    if not (folder / "config.json").is_file():
        return not_found(name, f"{folder} has no config.json", "point llm.model at the whole downloaded model folder")
    try:
        weight_files(folder)  # ModelError naming what to download when there are no weights
    except ModelError as e:
        what, _, fix = str(e).partition("; ")
        return not_found(name, what, fix or what)
    if importlib.util.find_spec("transformers") is None:
        return not_found(name, str(MissingDependencyError("transformers", "hf", f"The {name} backend")),
                         "pip install 'kb[hf]'")
    if settings.adapter and importlib.util.find_spec("peft") is None:
        return not_found(name, str(MissingDependencyError("peft", "finetune", "llm.adapter")),
                         "pip install 'kb[finetune]'")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return BackendInfo(name, True, label=folder.name, window=settings.n_ctx or window(config),
                       device=settings.transformers.device, facts={"path": str(folder)})
