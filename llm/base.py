"""The chat-model interface every backend implements, and the registry that picks one by config.

A backend turns a list of `Message`s into streamed text and counts tokens for context budgeting. It
declares what it can do (the languages it writes, its context window, whether it is small, whether
model-written query rewrites are worth asking it for, which fine-tuning methods apply), and the core asks
those instead of checking backend names. The checks and defaults every backend needs (the messages, the
unset sampling settings) live here once. Backends live one per module and are imported only when chosen,
so a missing optional package surfaces as `MissingDependencyError` naming the extra to install. This
module leaves out prompt building for retrieval (the chain does that) and any networking or model loading.
"""

from __future__ import annotations

import importlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kb.errors import ConfigError, MissingDependencyError, ModelError

if TYPE_CHECKING:
    from kb.config import LLMSettings

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ModelError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class Sampling:
    """A backend's generation defaults (llm.max_new_tokens, llm.temperature, llm.top_p). The values here are
    the one definition of kb's defaults: kb/config/llm.py's settings and the backends' arguments read them."""

    max_new_tokens: int = 512
    temperature: float = 0.1
    top_p: float = 0.8

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> Sampling:
        return cls(settings.max_new_tokens, settings.temperature, settings.top_p)

    def resolve(self, max_new_tokens: int | None = None, temperature: float | None = None,
                top_p: float | None = None) -> Sampling:
        """These defaults with a call's own values where it gave them (None: the default)."""
        return Sampling(max_new_tokens or self.max_new_tokens,
                        self.temperature if temperature is None else temperature,
                        self.top_p if top_p is None else top_p)


# Under this many parameters a model (e.g. the embedded SmolLM2-135M) copies and loops more than it answers:
# kb quotes the passages for it in answer.mode auto, and gives it a short prompt and answer when asked to write.
SMALL_MODEL = 1_000_000_000


class ChatBackend(ABC):
    """A chat model: streams answers and counts tokens, and declares what it can do."""

    name: str = "backend"
    context_window: int = 2048
    # The languages the model can write an answer (or a translation) in. The core asks this instead of
    # checking model names: e.g. query translation runs only for a model that writes both.
    languages: tuple[str, ...] = ("en", "zh")
    # Parameters of the model, where known (None: unknown, e.g. a remote server). A small model gets a short
    # answer budget and a short prompt by default (kb.answer.chain.answer_budget).
    parameters: int | None = None
    # The fine-tuning methods (kb.llm.finetune) that can train an adapter for this backend's model.
    finetune_methods: tuple[str, ...] = ()
    # Generation defaults for a call that leaves max_new_tokens / temperature / top_p unset.
    sampling: Sampling = Sampling()
    # Whether several streams may run at once (a server batches them); a local model generates one at a time.
    parallel_safe: bool = False

    @property
    def small(self) -> bool:
        """Whether the model is under SMALL_MODEL parameters (unknown size: no)."""
        return self.parameters is not None and self.parameters < SMALL_MODEL

    @property
    def rewrites_queries(self) -> bool:
        """Whether a follow-up's search query is worth having the model rewrite (answer.rewrite auto). Not for
        a small model: SmolLM2-135M's rewrites found less than the rule's (README); a backend may say no."""
        return not self.small

    def prepare(self, messages: list[Message], max_new_tokens: int | None = None,
                temperature: float | None = None, top_p: float | None = None) -> Sampling:
        """Check `messages` (check_messages) and fill a call's unset sampling values from `self.sampling`."""
        check_messages(messages)
        return self.sampling.resolve(max_new_tokens, temperature, top_p)

    @abstractmethod
    def stream(
        self,
        messages: list[Message],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        """Yield the answer to `messages` piece by piece."""

    def stream_in_turn(self, messages: list[Message], cancel: threading.Event, **gen) -> Iterator[str]:
        """`stream(messages, **gen)` once it is this call's turn on the model; nothing at all if `cancel` is set
        first (a client went away while its answer waited). A model only one caller uses never waits."""
        return self.stream(messages, **gen)

    def generate(self, messages: list[Message], **gen) -> str:
        """The whole answer at once (the joined stream)."""
        return "".join(self.stream(messages, **gen))

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's vocabulary."""

    def count_message_tokens(self, messages: list[Message]) -> int:
        """Tokens of the full rendered prompt; backends with a chat template override this."""
        return sum(self.count_tokens(m.content) + 4 for m in messages) + 2

    def warm(self, messages: list[Message]) -> None:
        """Read the start of a prompt ahead of time: the part before the last message's text. A backend that
        keeps what it read (llama.cpp's cache) then only reads the rest when `stream` gets the whole prompt.
        Nothing by default."""
        return None


@dataclass(frozen=True)
class BackendInfo:
    """What a backend's model is, read from the settings and the files on disk without loading it (describe).

    found: the model is there and its backend can run it; else `reason` says what is wrong and `fix` what to
    do (`absent`: none configured and none installed, which is a warning, not an error). `device` is the
    device setting a backend on torch will use ("" for the others), for a check of torch and CUDA."""

    name: str
    found: bool
    label: str = ""
    window: int | None = None
    languages: tuple[str, ...] = ChatBackend.languages
    parameters: int | None = None
    reason: str = ""
    fix: str = ""
    absent: bool = False
    where: str = ""  # e.g. " (embedded, 135M parameters, gguf on llama.cpp)", after the label
    device: str = ""
    facts: dict = field(default_factory=dict, compare=False)

    @property
    def small(self) -> bool:
        """As ChatBackend.small: under SMALL_MODEL parameters (unknown size: no)."""
        return self.parameters is not None and self.parameters < SMALL_MODEL


def not_found(name: str, reason: str, fix: str, **facts) -> BackendInfo:
    """A BackendInfo for a model that is not there (or cannot run): what is wrong and the fix."""
    return BackendInfo(name, False, reason=reason, fix=fix, facts=facts)


def check_messages(messages: list[Message]) -> None:
    """Raise ModelError unless `messages` is a non-empty list ending with a user turn."""
    if not messages:
        raise ModelError("no messages to answer; pass at least one user Message")
    if messages[-1].role != "user":
        raise ModelError(f"the last message must come from the user, not {messages[-1].role!r}")


def truncate_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut `text` before the first stop string; say whether one was found."""
    if not stop:
        return text, False
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def held_back(text: str, stop: list[str] | None) -> int:
    """How many trailing characters could still be the start of a stop string."""
    keep = 0
    for s in stop or []:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return keep


Factory = Callable[["LLMSettings"], ChatBackend]

# Built-in backends, imported only when chosen: name -> "module:function".
_BUILTIN: dict[str, str] = {
    "gguf": "kb.llm.gguf:from_settings",
    "chatglm2": "kb.llm.chatglm2:from_settings",
    "hf": "kb.llm.hf:from_settings",
    "openai": "kb.llm.openai_compat:from_settings",
    "scripted": "kb.llm.scripted:from_settings",
}
_REGISTRY: dict[str, Factory] = {}


def register_backend(name: str, factory: Factory) -> None:
    """Make `factory` answer for `settings.backend == name` (overrides a built-in of that name)."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """Every backend name load_backend accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def resolve_backend_name(settings: LLMSettings) -> str:
    """`settings.backend`, or for 'auto' the backend that `llm.model` / `llm.openai.base_url` call for."""
    if settings.backend != "auto":
        return settings.backend
    if settings.openai.base_url:
        return "openai"
    if not settings.model or settings.model.endswith(".gguf"):
        return "gguf"
    folder = Path(settings.model).expanduser()
    config = folder / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        is_glm = data.get("model_type") == "chatglm" or (folder / "kb_convert.json").is_file()
        return "chatglm2" if is_glm else "hf"
    raise ConfigError(
        f"llm.model {settings.model!r} is neither a .gguf file nor a model folder with config.json; "
        "fix the path, or set llm.backend (openai also needs llm.openai.base_url)"
    )


def load_backend(settings: LLMSettings) -> ChatBackend:
    """Build the backend `settings.backend` names (or 'auto' detects), importing its module only now."""
    name = resolve_backend_name(settings)
    if name in _REGISTRY:
        return _REGISTRY[name](settings)
    if name not in _BUILTIN:
        raise ConfigError(
            f"llm.backend {name!r} is not a known model backend; use one of {', '.join(backend_names())}"
        )
    module, func = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), func)(settings)


def describe(settings: LLMSettings) -> BackendInfo:
    """The description of the backend `settings` resolve to, from its module's `describe(settings)` (no model
    is loaded). A registered backend is described by name only; a bad setting gives a not-found one."""
    try:
        name = resolve_backend_name(settings)
    except ConfigError as e:
        what, _, fix = str(e).partition("; ")
        return not_found(settings.backend, what, fix or what)
    if name in _REGISTRY or name not in _BUILTIN:
        if name not in _REGISTRY:
            return not_found(name, f"llm.backend {name!r} is not a known model backend",
                             f"use one of {', '.join(backend_names())}")
        return BackendInfo(name, True, label=f"registered backend '{name}'", where=" (not loaded to describe it)")
    module = _BUILTIN[name].split(":")[0]
    return importlib.import_module(module).describe(settings)


def uses_torch_settings(settings: LLMSettings) -> bool:
    """Whether the backend `settings` resolve to reads llm.transformers (device, quantize)."""
    try:
        return resolve_backend_name(settings) in TORCH_BACKENDS
    except ConfigError:
        return False


TORCH_BACKENDS = ("chatglm2", "hf")
# How each backend's llm.model is given, for a settings form (kb's app): a folder, a server's model name, else a file.
MODEL_FORMS: dict[str, str] = {"chatglm2": "folder", "hf": "folder", "openai": "server"}


def model_form(name: str) -> str:
    """'folder', 'server' or 'file': what llm.model names for backend `name`."""
    return MODEL_FORMS.get(name, "file")


def require(module: str, extra: str, what: str, package: str | None = None):
    """Import an optional package or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(package or module.split(".")[0], extra, what) from e
