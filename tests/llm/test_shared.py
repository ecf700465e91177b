"""SharedBackend: concurrent streams on one local model take turns; a stream closed early frees the model."""

from __future__ import annotations

import threading
import time

from kb.config import LLMSettings
from kb.llm.base import ChatBackend, Message
from kb.llm.shared import SharedBackend, shared_backend


class _Recorder(ChatBackend):
    """A model that notes how many generations run at once."""

    name = "recorder"

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    def stream(self, messages, **gen):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            for word in ("one", " two", " three"):
                time.sleep(0.02)
                yield word
        finally:
            self.running -= 1

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _ask(backend: ChatBackend, out: list[str]) -> None:
    out.append(backend.generate([Message("user", "count")]))


def test_local_model_generates_one_stream_at_a_time():
    model = _Recorder()
    shared = SharedBackend(model)
    answers: list[str] = []
    threads = [threading.Thread(target=_ask, args=(shared, answers)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == ["one two three"] * 6
    assert model.most == 1


def test_parallel_backend_is_not_serialized():
    model = _Recorder()
    shared = SharedBackend(model, parallel=True)
    threads = [threading.Thread(target=_ask, args=(shared, [])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.most > 1


def test_closing_a_stream_early_frees_the_model():
    shared = SharedBackend(_Recorder())
    stream = shared.stream([Message("user", "count")])
    assert next(stream) == "one"
    stream.close()  # what a disconnected HTTP client does to its answer
    done: list[str] = []
    t = threading.Thread(target=_ask, args=(shared, done))
    t.start()
    t.join(timeout=5)
    assert done == ["one two three"]


def test_one_instance_per_settings():
    a = shared_backend(LLMSettings(backend="scripted"))
    assert shared_backend(LLMSettings(backend="scripted")) is a
    assert shared_backend(LLMSettings(backend="scripted", max_new_tokens=7)) is not a
    assert a.name == "scripted"


def test_a_caller_waiting_for_its_turn_gives_up_when_cancelled_and_never_runs_the_model():
    model = _Recorder()
    shared = SharedBackend(model)
    running = shared.stream([Message("user", "count")])
    assert next(running) == "one"  # holds the model
    cancel = threading.Event()
    out: list[str] = []
    waiter = threading.Thread(target=lambda: out.extend(shared.stream_in_turn([Message("user", "x")], cancel)))
    waiter.start()
    cancel.set()  # its client went away
    waiter.join(timeout=5)
    assert not waiter.is_alive() and out == []  # gave up while the other stream still holds the model
    assert model.most == 1 and shared.busy
    running.close()
    assert list(shared.stream_in_turn([Message("user", "x")], threading.Event())) == ["one", " two", " three"]
