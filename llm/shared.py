"""One model per process, shared by many threads (the HTTP server's requests, the web app's sessions).

Local models (llama.cpp, a torch model on one GPU) cannot run two generations at once, so
`SharedBackend` lets one stream run at a time; the others wait their turn. The lock is released when
a stream ends, fails or is closed early (a client that disconnects closes its stream), so a dropped
request never blocks the next. Remote OpenAI-compatible servers batch requests themselves and are not
serialized. This module leaves out queue limits and fairness: waiters take the lock in any order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from kb.config import LLMSettings
from kb.llm.base import ChatBackend, Message, load_backend, resolve_backend_name

_PARALLEL_SAFE = {"openai"}


class SharedBackend(ChatBackend):
    """Wraps a backend so that concurrent callers generate one at a time (unless it is parallel-safe)."""

    def __init__(self, inner: ChatBackend, parallel: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.context_window = inner.context_window
        self.languages = inner.languages
        self.parameters = inner.parameters
        self._lock = None if parallel else threading.Lock()
        self._tokens_lock = threading.Lock()

    def stream(self, messages: list[Message], **gen) -> Iterator[str]:
        if self._lock is None:
            yield from self.inner.stream(messages, **gen)
            return
        with self._lock:
            yield from self.inner.stream(messages, **gen)

    def count_tokens(self, text: str) -> int:
        with self._tokens_lock:
            return self.inner.count_tokens(text)

    def count_message_tokens(self, messages: list[Message]) -> int:
        with self._tokens_lock:
            return self.inner.count_message_tokens(messages)

    def __getattr__(self, name: str):
        # Anything else a chain may ask of a backend (model path, adapter, ...) comes from the model.
        return getattr(self.__dict__["inner"], name)


_shared: dict[str, SharedBackend] = {}
_shared_lock = threading.Lock()


def shared_backend(settings: LLMSettings) -> SharedBackend:
    """The process's one backend for these settings, loaded on first use."""
    key = settings.model_dump_json()
    with _shared_lock:
        if key not in _shared:
            parallel = resolve_backend_name(settings) in _PARALLEL_SAFE
            _shared[key] = SharedBackend(load_backend(settings), parallel=parallel)
        return _shared[key]
