"""One model per process, shared by many threads (the HTTP server's requests, the web app's sessions).

Local models (llama.cpp, a torch model on one GPU) cannot run two generations at once, so
`SharedBackend` lets one stream run at a time; the others wait their turn. The lock is released when
a stream ends, fails or is closed early (a client that disconnects closes its stream), so a dropped
request never blocks the next; a caller still waiting for its turn gives up when its cancel event is set
(`stream_in_turn`), without touching the model. A backend that declares `parallel_safe` (a remote
OpenAI-compatible server, which batches requests itself) is not serialized. This module leaves out fairness
(waiters take the lock in any order) and how many may wait (kb/answer/admission.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from kb.config import LLMSettings
from kb.llm.base import ChatBackend, Message, load_backend

TURN_POLL = 0.05  # seconds: how often a caller waiting for the model checks whether it was cancelled


class SharedBackend(ChatBackend):
    """Wraps a backend so that concurrent callers generate one at a time (unless it is parallel-safe)."""

    def __init__(self, inner: ChatBackend, parallel: bool = False) -> None:
        self.inner = inner
        # What the model declares (ChatBackend's class attributes) is the model's own.
        self.name = inner.name
        self.context_window = inner.context_window
        self.languages = inner.languages
        self.parameters = inner.parameters
        self.finetune_methods = inner.finetune_methods
        self.sampling = inner.sampling
        self.parallel_safe = parallel
        self._lock = None if parallel else threading.Lock()
        self._tokens_lock = threading.Lock()

    @property
    def small(self) -> bool:
        return self.inner.small

    @property
    def rewrites_queries(self) -> bool:
        return self.inner.rewrites_queries

    def stream(self, messages: list[Message], **gen) -> Iterator[str]:
        if self._lock is None:
            yield from self.inner.stream(messages, **gen)
            return
        with self._lock:
            yield from self.inner.stream(messages, **gen)

    def stream_in_turn(self, messages: list[Message], cancel: threading.Event, **gen) -> Iterator[str]:
        """As stream(), but a caller waiting for its turn gives up, writing nothing, once `cancel` is set."""
        if self._lock is None:
            yield from self.inner.stream(messages, **gen)
            return
        while not self._lock.acquire(timeout=TURN_POLL):
            if cancel.is_set():
                return
        try:
            if not cancel.is_set():
                yield from self.inner.stream(messages, **gen)
        finally:
            self._lock.release()

    def count_tokens(self, text: str) -> int:
        with self._tokens_lock:
            return self.inner.count_tokens(text)

    def count_message_tokens(self, messages: list[Message]) -> int:
        with self._tokens_lock:
            return self.inner.count_message_tokens(messages)

    @property
    def busy(self) -> bool:
        """Whether a stream holds the model now (never, for a parallel-safe backend)."""
        return self._lock is not None and self._lock.locked()

    def warm(self, messages: list[Message]) -> None:
        """The model's head start on a prompt, only while no stream holds it (a head start must not wait)."""
        if self._lock is None:
            self.inner.warm(messages)
        elif self._lock.acquire(blocking=False):
            try:
                self.inner.warm(messages)
            finally:
                self._lock.release()


_shared: dict[str, SharedBackend] = {}
_shared_lock = threading.Lock()


def shared_backend(settings: LLMSettings) -> SharedBackend:
    """The process's one backend for these settings, loaded on first use."""
    key = settings.model_dump_json()
    with _shared_lock:
        if key not in _shared:
            inner = load_backend(settings)
            _shared[key] = SharedBackend(inner, parallel=inner.parallel_safe)
        return _shared[key]
