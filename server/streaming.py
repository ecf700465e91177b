"""Run kb's blocking answer stream beside the event loop, and stop it when the client goes away.

`kb.stream()` is a plain generator that blocks on retrieval and on the model. A `Pump` runs it in a
thread of its own and hands its items to the request's coroutine through a queue; the coroutine polls
the connection while it waits. When the client disconnects (or the response is abandoned) the pump's
stop flag is set and `StoppableBackend` ends the model's stream after the current token, which closes
the shared model's stream and frees it for the next request. The chain then finishes on the partial
text and the thread exits. This module leaves out response formats (openai_routes.py, kb_routes.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.requests import Request

POLL_SECONDS = 0.25  # how often a waiting request checks that its client is still there
_END = object()


class StoppableBackend:
    """A per-request view of the shared model whose stream ends once `stop` is set.

    `sampling` holds the request's own temperature / top_p / max_new_tokens (None: the settings' value).
    max_new_tokens can only shorten an answer: the prompt was packed to leave answer.answer_tokens free."""

    def __init__(self, inner: Any, stop: threading.Event, sampling: dict[str, Any] | None = None) -> None:
        self._inner = inner
        self._stop = stop
        self._sampling = {k: v for k, v in (sampling or {}).items() if v is not None}

    def stream(self, messages, **gen) -> Iterator[str]:
        if self._stop.is_set():
            return
        for key, value in self._sampling.items():
            gen[key] = min(value, gen.get(key) or value) if key == "max_new_tokens" else value
        pieces = self._inner.stream(messages, **gen)
        try:
            for piece in pieces:
                yield piece
                if self._stop.is_set():
                    return
        finally:
            pieces.close()  # releases the shared model's turn at once

    def generate(self, messages, **gen) -> str:
        return "".join(self.stream(messages, **gen))

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_inner"], name)


class Pump:
    """Items of `make(stop)` produced in a worker thread, consumed with `async for` in the request."""

    def __init__(self, make: Callable[[threading.Event], Iterator[Any]]) -> None:
        self.stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, args=(make,), name="kb-answer", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.stop.set()

    def _run(self, make: Callable[[threading.Event], Iterator[Any]]) -> None:
        try:
            for item in make(self.stop):
                self._put(item)
        except BaseException as e:  # noqa: BLE001 - handed to the request, which raises it
            self._put(e)
        finally:
            self._put(_END)

    async def items(self, request: Request | None = None) -> AsyncIterator[Any]:
        """The items in order; an exception of the stream is raised here. Stops if the client leaves."""
        last_poll = time.monotonic()
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), POLL_SECONDS)
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    item = None
                if request is not None and (item is None or time.monotonic() - last_poll > POLL_SECONDS):
                    last_poll = time.monotonic()
                    if await request.is_disconnected():
                        return
                if item is None:
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()
