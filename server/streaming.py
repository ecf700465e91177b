"""Run kb's blocking answer stream beside the event loop, and stop it when the client goes away.

The answer service's AnswerStream blocks on retrieval and on the model. A `Pump` starts it and reads it in a
thread of its own, handing its text pieces to the request's coroutine through a queue; the coroutine polls
the connection while it waits. When the client disconnects (or the response is abandoned) the pump stops the
stream (AnswerStream.stop): the model ends after the current piece, which frees the shared model for the next
request; the chain finishes on the partial text and the thread exits. This module leaves out response formats
(openai_routes.py, kb_routes.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from kb.answer.stream import AnswerStream
from kb.answer.types import Answer

POLL_SECONDS = 0.25  # how often a waiting request checks that its client is still there
_END = object()


class Pump:
    """The pieces of the AnswerStream `make()` starts, read in a worker thread, consumed with `async for` in the
    request; `answer` once they are all read."""

    def __init__(self, make: Callable[[], AnswerStream]) -> None:
        self._stopped = threading.Event()
        self._stream: AnswerStream | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, args=(make,), name="kb-answer", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.stop()

    def _run(self, make: Callable[[], AnswerStream]) -> None:
        try:
            self._stream = make()
            if self._stopped.is_set():
                self._stream.stop()
            for piece in self._stream:
                self._put(piece)
        except BaseException as e:  # noqa: BLE001 - handed to the request, which raises it
            self._put(e)
        finally:
            self._put(_END)

    def stop(self) -> None:
        """Stop the answer after the model's current piece (the client is gone)."""
        self._stopped.set()
        if self._stream is not None:
            self._stream.stop()

    @property
    def answer(self) -> Answer | None:
        """The Answer, once every piece was read (None while it is not, or after the client went away)."""
        stream = self._stream
        return stream.answer() if stream is not None and stream.done and not self._stopped.is_set() else None

    async def pieces(self, request: Request | None = None) -> AsyncIterator[str]:
        """The text pieces in order; an exception of the stream is raised here. Stops if the client leaves."""
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
                        self.stop()
                        return
                if item is None:
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._stream is None or not self._stream.done:
                self.stop()
