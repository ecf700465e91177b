"""How many answers may be running or waiting for the model at once (server.max_queued), and how long a client
that was turned away should wait before it tries again.

    admission = Admission(8)
    place = admission.enter()     # BusyError(retry_after=..., limit=8) when 8 answers hold a place
    ...                           # the answer runs
    place.release(completed=True) # once, however the answer ended (a second release does nothing)

Without a bound, twenty clients of one CPU model each wait about a minute and none is told to back off; with
one, the answers past it are refused at once and told when to come back. The wait is estimated from measured
answers: the model is taken as one first-come, first-served server, so an answer's service time is from when it
could first have had the model (admitted, or the previous answer's end, whichever is later) to its own end, and
Retry-After is the moving average of that: about when the next place frees. The answer service
(kb/answer/service.py) takes a place for every answer that uses the model; this module leaves out which
answers those are and how a refusal reaches a client (server/app.py: 429 with Retry-After).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from kb.errors import BusyError

LOCAL_QUEUE = 8  # a model in this process writes one answer at a time: 8 is about 8 answers' wait
REMOTE_QUEUE = 32  # a server that batches (llm.backend openai) runs many streams at once
DEFAULT_RETRY = 15  # seconds: Retry-After before any answer was timed
SMOOTHING = 0.3  # weight of the newest service time in the moving average


def queue_limit(max_queued: int | None, parallel: bool) -> int:
    """The bound on answers running or waiting for the model: server.max_queued if set, else REMOTE_QUEUE for
    a model that runs several streams at once (ChatBackend.parallel_safe: a remote server that batches) and
    LOCAL_QUEUE for a model in this process."""
    if max_queued is not None:
        return max_queued
    return REMOTE_QUEUE if parallel else LOCAL_QUEUE


class Place:
    """One answer's place in the queue; `release` gives it back (once; later calls do nothing; thread-safe)."""

    def __init__(self, admission: Admission, admitted_at: float) -> None:
        self._admission = admission
        self.admitted_at = admitted_at
        self._released = False
        self._lock = threading.Lock()

    def release(self, completed: bool = False) -> None:
        """Give the place back; `completed`: the answer ran to its end (stopped early counts), so time it."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._leave(self, completed)


class Admission:
    """At most `limit` places at once (an int, or a function asked at each `enter`); thread-safe."""

    def __init__(self, limit: int | Callable[[], int], clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit if callable(limit) else (lambda: limit)
        self._clock = clock
        self._lock = threading.Lock()
        self._held = 0
        self._last_end: float | None = None  # when the last completed answer ended
        self._service: float | None = None  # moving average of service times, seconds

    @property
    def held(self) -> int:
        """Answers holding a place now."""
        return self._held

    @property
    def limit(self) -> int:
        return self._limit()

    def retry_after(self) -> int:
        """Whole seconds until a place is likely to free: the measured service time rounded up (at least 1),
        DEFAULT_RETRY before any answer was timed."""
        service = self._service
        return DEFAULT_RETRY if service is None else max(1, math.ceil(service))

    def enter(self) -> Place:
        """A place for one answer, or BusyError saying how many hold one and when to try again."""
        limit = self._limit()
        with self._lock:
            if self._held < limit:
                self._held += 1
                return Place(self, self._clock())
        retry = self.retry_after()
        raise BusyError(f"kb is busy: {limit} answers are running or waiting for the model (server.max_queued, "
                        f"KB_SERVER__MAX_QUEUED); try again in about {retry} s", retry_after=retry, limit=limit)

    def _leave(self, place: Place, completed: bool) -> None:
        now = self._clock()
        with self._lock:
            self._held -= 1
            if not completed:  # closed or failed: its time says nothing about the model's pace
                return
            began = place.admitted_at if self._last_end is None else max(place.admitted_at, self._last_end)
            took = max(0.0, now - began)
            self._last_end = now
            self._service = took if self._service is None else SMOOTHING * took + (1 - SMOOTHING) * self._service
