"""A backend for any OpenAI-compatible chat server: vLLM, Ollama, Xinference, LM Studio, OpenAI.

This is the path for ChatGLM2 (or anything else) served on bigger hardware. Requests go through
langchain-openai with `llm.openai.base_url`, `llm.model` and `llm.openai.api_key`. The server holds the
tokenizer, so token counts here are estimates (about 4 characters per token, one per CJK
character); keep a margin when budgeting a context. It leaves out tool calls and images.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

from kb.errors import ConfigError, MissingDependencyError, ModelError
from kb.llm.base import BackendInfo, ChatBackend, Message, Sampling, not_found, require
from kb.text.lang import HAN, HANGUL, KANA

_CJK = re.compile(f"[{KANA}{HAN}{HANGUL}]")
DEFAULT_WINDOW = 8192


def estimate_tokens(text: str) -> int:
    """CJK characters count one each; other text about one token per 4 characters."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


class OpenAIBackend(ChatBackend):
    """Streams chat completions from an OpenAI-compatible HTTP server."""

    name = "openai"
    parallel_safe = True  # the server batches concurrent requests itself

    def __init__(self, base_url: str, model: str, api_key: str = "", *, context_window: int = 0,
                 max_new_tokens: int = Sampling.max_new_tokens, temperature: float = Sampling.temperature, top_p: float = Sampling.top_p,
                 timeout: float = 120.0) -> None:
        require("langchain_openai", "openai", "The openai backend", package="langchain-openai")
        # BaseChatOpenAI sends `max_tokens`, which every compatible server reads; ChatOpenAI renames
        # it to `max_completion_tokens`, which older vLLM / Ollama / Xinference builds ignore.
        from langchain_openai.chat_models.base import BaseChatOpenAI

        if not base_url:
            raise ConfigError(
                "llm.backend is openai but llm.openai.base_url is empty; set it, e.g. http://localhost:8000/v1")
        if not model:
            raise ConfigError("llm.backend is openai but llm.model is empty; set it to the server's model name")
        self.base_url, self.model = base_url, model
        self.context_window = context_window or DEFAULT_WINDOW
        self.sampling = Sampling(max_new_tokens, temperature, top_p)
        # A local server usually wants no key, but the client insists on one; "EMPTY" is vLLM's convention.
        self.chat = BaseChatOpenAI(base_url=base_url, model=model, api_key=api_key or "EMPTY",
                                   timeout=timeout, max_retries=1)

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        import openai
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        gen = self.prepare(messages, max_new_tokens, temperature, top_p)
        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        lc = [kinds[m.role](content=m.content) for m in messages]
        params = {"max_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p}
        try:
            for chunk in self.chat.stream(lc, stop=stop or None, **params):
                if isinstance(chunk.content, str) and chunk.content:
                    yield chunk.content
        except openai.APIConnectionError as e:
            raise ModelError(
                f"could not reach the OpenAI-compatible server at {self.base_url} ({e}); check llm.openai.base_url "
                "and that the server is running"
            ) from e
        except openai.APIStatusError as e:
            raise ModelError(
                f"the server at {self.base_url} refused the request for model {self.model!r}: "
                f"HTTP {e.status_code} {e.message}; check llm.model and llm.openai.api_key"
            ) from e

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_message_tokens(self, messages: list[Message]) -> int:
        return sum(estimate_tokens(m.content) + 4 for m in messages) + 3


def from_settings(settings) -> OpenAIBackend:
    """llm.openai (base_url, api_key) and llm.model; llm.n_ctx is the server's context window (default 8192)."""
    if settings.adapter:
        raise ConfigError(
            f"llm.adapter {settings.adapter!r} cannot be applied through an OpenAI-compatible server: load it in "
            "the server (vLLM: --enable-lora --lora-modules NAME=PATH) and set llm.model to NAME instead"
        )
    return OpenAIBackend(settings.openai.base_url, settings.model, settings.openai.api_key, context_window=settings.n_ctx,
                         max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                         top_p=settings.top_p)


def describe(settings) -> BackendInfo:
    """The server llm.openai.base_url names, from the settings only (it is not contacted)."""
    if not settings.openai.base_url:
        return not_found("openai", "llm.backend is openai but llm.openai.base_url is empty",
                         "set llm.openai.base_url, e.g. http://localhost:8000/v1")
    if not settings.model:
        return not_found("openai", "llm.backend is openai but llm.model is empty",
                         "set llm.model to the server's model name")
    if importlib.util.find_spec("langchain_openai") is None:
        return not_found("openai", str(MissingDependencyError("langchain-openai", "openai", "The openai backend")),
                         "pip install 'kb[openai]'")
    return BackendInfo("openai", True, label=settings.model, window=settings.n_ctx or DEFAULT_WINDOW,
                       where=f" at {settings.openai.base_url} (not contacted)",
                       facts={"base_url": settings.openai.base_url, "window_assumed": not settings.n_ctx})
