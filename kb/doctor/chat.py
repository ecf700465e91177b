"""`kb doctor`'s checks of the chat model and of how answers will be written (kb/doctor/__init__.py has the levels).

The model is located and described, never loaded: a GGUF file's metadata is read by llama.cpp with
`vocab_only` (the vocabulary, not the weights), a ChatGLM2 / Hugging Face folder by its config.json, an
OpenAI-compatible server by its settings only (it is not contacted). It leaves out the embedder
(kb/doctor/models.py).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from kb.config import LLMSettings, Settings
from kb.doctor.findings import Finding, installed, languages_text, split_fix
from kb.doctor.models import TorchInfo, cuda_usable, hf_cached
from kb.errors import KBError, MissingDependencyError, ModelError
from kb.llm.base import SMALL_MODEL, ChatBackend, backend_names, load_backend, resolve_backend_name
from kb.llm.chatglm2 import _native_window
from kb.llm.chatglm2_convert import glm_config_dict, weight_files
from kb.llm.openai_compat import DEFAULT_WINDOW

SECTION = "chat model"
INSTALL_LOCAL = "pip install 'kb[local]' for the embedded SmolLM2 (English), or set llm.model (README, Models)"


@dataclass(frozen=True)
class ChatModel:
    """What the settings' chat model is, as far as answers are concerned."""

    state: Literal["ready", "absent", "broken"]  # absent: none configured and none installed
    label: str = ""
    languages: tuple[str, ...] = ()
    fix: str = ""
    parameters: int | None = None


def chat_finding(settings: Settings, t: TorchInfo) -> tuple[Finding, ChatModel]:
    """The chat model the settings resolve to: found or not, its languages and context window."""
    llm = settings.llm
    try:
        name = resolve_backend_name(llm)
        if name == "gguf":
            return _gguf(llm)
        if name in ("chatglm2", "hf"):
            return _torch_folder(llm, name, t)
        if name == "openai":
            return _openai(llm)
        if name not in backend_names():
            load_backend(llm)  # raises the ConfigError that lists the known backends
        backend = load_backend(llm) if name == "scripted" else None  # scripted loads instantly
    except KBError as e:  # ModelError, ConfigError, MissingDependencyError: the message names the fix
        return _broken(*split_fix(e))
    if backend is None:
        model = ChatModel("ready", f"backend '{name}'", ChatBackend.languages)
        return Finding(SECTION, "chat model", "ok", f"registered backend '{name}' (kb doctor does not load it)",
                       facts={"backend": name}), model
    return _ready(name, f"{name} backend", backend.languages, backend.context_window, {})


def _ready(backend: str, label: str, languages: tuple[str, ...], window: int | None, facts: dict,
           where: str = "") -> tuple[Finding, ChatModel]:
    facts = {"backend": backend, "model": label, "languages": list(languages), "context_window": window, **facts}
    text = f"{label}{where}, writes {languages_text(languages)}" + (f"; window {window} tokens" if window else "")
    return Finding(SECTION, "chat model", "ok", text, facts=facts), ChatModel("ready", label, tuple(languages),
                                                                               parameters=facts.get("parameters"))


def _broken(summary: str, fix: str, **facts) -> tuple[Finding, ChatModel]:
    return (Finding(SECTION, "chat model", "error", summary, fix=fix, facts=facts),
            ChatModel("broken", fix=fix))


def _absent(summary: str, fix: str) -> tuple[Finding, ChatModel]:
    return (Finding(SECTION, "chat model", "warn", summary, fix=fix, facts={"backend": "gguf", "installed": False}),
            ChatModel("absent", fix=fix))


def _gguf(llm: LLMSettings) -> tuple[Finding, ChatModel]:
    from kb.llm.gguf import _is_packaged, packaged_model  # _is_packaged: the one test of "the embedded model"

    if llm.model:
        path = Path(llm.model).expanduser()
        if not path.is_file():
            return _broken(f"llm.model {llm.model} does not exist",
                           "set llm.model to an existing .gguf file, or remove llm.model to use the embedded SmolLM2")
    else:
        try:
            path = packaged_model()
        except ModelError:
            return _absent("none installed (the embedded SmolLM2 comes with the 'local' extra)", INSTALL_LOCAL)
        if not installed("llama_cpp"):
            return _absent("SmolLM2 is installed but llama-cpp-python is not", INSTALL_LOCAL)
    if not installed("llama_cpp"):
        return _broken(str(MissingDependencyError("llama-cpp-python", "local", "The gguf backend")),
                       "pip install 'kb[local]'")
    try:
        meta, params = gguf_metadata(path)
    except (ValueError, RuntimeError, OSError) as e:
        return _broken(f"llama.cpp cannot read {path} ({e})", "check that the file is a complete GGUF model")
    if not meta.get("tokenizer.chat_template"):
        return _broken(f"{path.name} has no chat template in its metadata", "use a chat (instruct) GGUF model")
    if llm.adapter and not Path(llm.adapter).expanduser().is_file():
        return _broken(f"llm.adapter {llm.adapter} does not exist", "fix llm.adapter (a LoRA in GGUF form)")
    arch = meta.get("general.architecture", "")
    trained = int(meta.get(f"{arch}.context_length", 0) or 0) or None
    packaged = _is_packaged(path)
    languages = ("en",) if packaged else ChatBackend.languages  # what GGUFBackend declares
    label = path.stem
    where = f" ({'embedded, ' if packaged else ''}{params / 1e6:,.0f}M parameters, gguf on llama.cpp)"
    return _ready("gguf", label, languages, llm.n_ctx or trained,
                  {"path": str(path), "packaged": packaged, "parameters": params, "trained_context": trained,
                   "general_name": meta.get("general.name")}, where)


@contextmanager
def _quiet_stderr():
    """llama.cpp's C code writes to fd 2 even with verbose=False."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def gguf_metadata(path: Path) -> tuple[dict[str, str], int]:
    """(the GGUF file's metadata, its parameter count), read with the vocabulary only (no weights)."""
    import llama_cpp

    with _quiet_stderr():
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata), int(llama_cpp.llama_model_n_params(llm.model))
    finally:
        llm.close()


def _torch_folder(llm: LLMSettings, name: str, t: TorchInfo) -> tuple[Finding, ChatModel]:
    """A ChatGLM2 or Hugging Face model folder, described from its config.json."""
    if not llm.model:
        return _broken(f"llm.backend is {name} but llm.model is empty", "set llm.model to the model folder")
    folder = Path(llm.model).expanduser()
    if not folder.is_dir():
        cached = hf_cached(llm.model) if name == "hf" else None
        if not cached:
            return _broken(f"llm.model {llm.model} is not a folder", "fix llm.model (the downloaded model folder)")
        folder = Path(cached)
    if not (folder / "config.json").is_file():
        return _broken(f"{folder} has no config.json", "point llm.model at the whole downloaded model folder")
    weight_files(folder)  # ModelError naming what to download when there are no weights
    if not installed("transformers"):
        return _broken(str(MissingDependencyError("transformers", "hf", f"The {name} backend")),
                       "pip install 'kb[hf]'")
    if t.version is None or t.error:
        return _broken(f"the {name} backend needs torch, which is {'missing' if t.version is None else 'broken'}",
                       "install the torch build that fits this machine (README)")
    if llm.device.startswith("cuda") and not cuda_usable(t):
        return _broken(f"llm.device is {llm.device} but no CUDA GPU is visible", "set llm.device: auto or cpu")
    if llm.adapter and not installed("peft"):
        return _broken(str(MissingDependencyError("peft", "finetune", "llm.adapter")), "pip install 'kb[finetune]'")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    device = "GPU" if cuda_usable(t) and llm.device != "cpu" else "CPU"
    return _ready(name, folder.name, ChatBackend.languages, llm.n_ctx or folder_window(config, name),
                  {"path": str(folder), "device": device}, f" ({name} on the {device})")


def folder_window(config: dict, backend: str) -> int:
    """The context window kb gives a model folder, from its config.json (the backends' own rules)."""
    if backend == "chatglm2":

        glm = glm_config_dict(config) if "multi_query_group_num" in config else config
        return _native_window(SimpleNamespace(rope_parameters=glm.get("rope_parameters"),
                                              max_position_embeddings=glm.get("max_position_embeddings", 0)))
    return int(config.get("max_position_embeddings") or 0) or 2048  # as HFBackend.from_folder


def _openai(llm: LLMSettings) -> tuple[Finding, ChatModel]:
    if not llm.openai.base_url:
        return _broken("llm.backend is openai but llm.openai.base_url is empty",
                       "set llm.openai.base_url, e.g. http://localhost:8000/v1")
    if not llm.model:
        return _broken("llm.backend is openai but llm.model is empty", "set llm.model to the server's model name")
    if not installed("langchain_openai"):
        return _broken(str(MissingDependencyError("langchain-openai", "openai", "The openai backend")),
                       "pip install 'kb[openai]'")
    return _ready("openai", llm.model, ChatBackend.languages, llm.n_ctx or DEFAULT_WINDOW,
                  {"base_url": llm.openai.base_url, "window_assumed": not llm.n_ctx},
                  f" at {llm.openai.base_url} (not contacted)")


def answer_finding(mode: str, model: ChatModel) -> Finding:
    """Whether answers are generated by the chat model or extracted from the passages (answer.mode)."""
    facts = {"mode": mode, "model": model.state}
    if mode == "extract":
        return Finding(SECTION, "answers", "ok", "extracted for every question (answer.mode: extract): the "
                       "passages' best sentences, quoted with their [n] markers; no model call", facts=facts)
    if model.state == "broken":
        return Finding(SECTION, "answers", "warn", "none can be generated until the chat model above is fixed",
                       fix=model.fix, facts=facts)
    if model.state == "absent":
        if mode == "generate":
            return Finding(SECTION, "answers", "error", "answer.mode is generate, but no chat model is installed",
                           fix=f"{model.fix}; or set answer.mode: auto", facts=facts)
        return Finding(SECTION, "answers", "warn", "extracted (quoted from the passages): no chat model is "
                       "installed", fix=model.fix, facts=facts)
    if mode == "generate":
        return Finding(SECTION, "answers", "ok", f"generated by {model.label} for every question "
                       "(answer.mode: generate)", facts=facts)
    if model.parameters is not None and model.parameters < SMALL_MODEL:
        facts.update({"en": "extract", "zh": "extract"})
        return Finding(SECTION, "answers", "ok", f"extracted (quoted from the passages) for every question: "
                       f"{model.label} is a small model ({model.parameters / 1e6:,.0f}M parameters) that copies "
                       "and loops more than it answers (answer.mode: auto; --answer-mode generate lets it write; "
                       "for written answers use a bigger model, e.g. ChatGLM2: README, Models)", facts=facts)
    writes = {code: "generate" if code in model.languages else "extract" for code in ("en", "zh")}
    facts.update(writes)
    if all(v == "generate" for v in writes.values()):
        text = f"generated by {model.label} in Chinese and English (answer.mode: auto)"
    else:
        text = (f"generated by {model.label} for {languages_text(model.languages)} questions over "
                f"{languages_text(model.languages)} passages; extracted (quoted from the passages) for the rest, "
                f"since it writes only {languages_text(model.languages)} (answer.mode: auto; Chinese answers "
                "need a model that writes Chinese, e.g. ChatGLM2: README, Models)")
    return Finding(SECTION, "answers", "ok", text, facts=facts)
