"""An answer being written, as one object: iterate it for the text pieces, then ask it for the `Answer`.

    stream = kb.stream("How long are snapshots kept?")
    for piece in stream:         # the text as the model writes it (or as kb quotes it)
        print(piece, end="")
    answer = stream.answer()     # the verified Answer: citations, passages, timings

The answer chain (kb/answer/chain.py) ends its stream with the Answer; this object is the one place that tells
the two apart, so no caller tests items with isinstance. `stop()` ends the model's stream after the current
piece (a client went away, a user pressed Ctrl-C): the shared model is freed at once, and the Answer is made of
what was written so far. `close()` abandons the stream without an Answer. `on_end` callbacks run once however
the stream ends (read to its end, stopped, failed, or closed, iterated or not): the answer service gives back
the answer's place in the queue there. This module leaves out how the answer is made (kb/answer/chain.py) and
how it is started (kb/answer/service.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from kb.answer.types import Answer


class AnswerStream:
    """Text pieces of one answer (iterate once), then the Answer (`answer()`); `on_done` callbacks get the Answer."""

    def __init__(self, items: Iterator[str | Answer], stop: threading.Event | None = None) -> None:
        self._items = items
        self.stopped = stop or threading.Event()  # set by stop(): the model ends after its current piece
        self._answer: Answer | None = None
        self._done: list[Callable[[Answer], object]] = []
        self._pieces_left: Iterator[str] | None = None  # the pieces, once iteration began
        self._closed = False
        self._end: list[Callable[[], object]] | None = []  # None once the stream has ended
        self._end_lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        if self._pieces_left is not None:
            raise RuntimeError("an AnswerStream is iterated once; read the rest with answer()")
        self._pieces_left = self._pieces()
        return self._pieces_left

    def _pieces(self) -> Iterator[str]:
        try:
            for item in self._items:
                if isinstance(item, Answer):
                    self._finish(item)
                    return
                yield item
        finally:
            try:
                self._items.close()
            finally:
                self._ended()

    def _finish(self, answer: Answer) -> None:
        self._answer = answer
        for callback in self._done:
            callback(answer)

    def answer(self) -> Answer | None:
        """The final Answer: the rest of the stream is run (its text unread) if it was not iterated to its end.
        None when the stream was closed before its end."""
        if self._pieces_left is None:
            self._pieces_left = self._pieces()
        if not self._closed:
            for _ in self._pieces_left:  # what nobody read yet
                pass
        return self._answer

    def text(self) -> str:
        """The answer's verified text (markers that pointed nowhere removed); '' for a closed stream."""
        answer = self.answer()
        return answer.text if answer is not None else ""

    @property
    def done(self) -> bool:
        """Whether the Answer is complete."""
        return self._answer is not None

    def on_done(self, callback: Callable[[Answer], object]) -> AnswerStream:
        """Call `callback(answer)` once the Answer is complete (at once if it is). Returns self."""
        if self._answer is not None:
            callback(self._answer)
        else:
            self._done.append(callback)
        return self

    def on_end(self, callback: Callable[[], object]) -> AnswerStream:
        """Call `callback()` once when the stream ends in any way: its items ran out or raised, or it was closed
        (at once if it has ended). Returns self."""
        with self._end_lock:
            if self._end is not None:
                self._end.append(callback)
                return self
        callback()
        return self

    def _ended(self) -> None:
        with self._end_lock:
            callbacks, self._end = self._end or [], None
        for callback in callbacks:
            callback()

    def stop(self) -> None:
        """End the model's stream after its current piece; the Answer is made of what was written (thread-safe)."""
        self.stopped.set()

    def close(self) -> None:
        """Abandon the stream now: the model's stream is closed, no Answer is made."""
        self.stopped.set()
        self._closed = True
        try:
            if self._pieces_left is not None:
                self._pieces_left.close()
            self._items.close()
        finally:
            self._ended()  # a stream never iterated has no generator whose end would say so
