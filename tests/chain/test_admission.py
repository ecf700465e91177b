"""The queue bound of the answer service (kb/answer/admission.py, server.max_queued): past the bound an answer is
refused at once with a wait estimated from measured answers, and a place comes back however an answer ends."""

from __future__ import annotations

import gc
import json

import pytest

from kb.answer.admission import DEFAULT_RETRY, LOCAL_QUEUE, REMOTE_QUEUE, Admission, queue_limit
from kb.answer.service import AnswerService
from kb.config import Settings
from kb.errors import BusyError, ConfigError, KBError

Q = "How long are hourly snapshots kept?"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bound_refuses_at_once_and_a_released_place_is_taken_again():
    admission = Admission(2)
    first, second = admission.enter(), admission.enter()
    with pytest.raises(BusyError) as refused:
        admission.enter()
    assert refused.value.limit == 2 and refused.value.retry_after == DEFAULT_RETRY
    message = str(refused.value)
    assert "2 answers are running or waiting" in message and "server.max_queued" in message
    assert f"try again in about {DEFAULT_RETRY} s" in message
    first.release()
    first.release()  # a second release gives back nothing more
    assert admission.held == 1
    admission.enter()
    with pytest.raises(BusyError):
        admission.enter()
    second.release()
    assert admission.held == 1


def test_retry_after_is_the_measured_service_time_of_one_model_taking_answers_in_turn():
    clock = Clock()
    admission = Admission(5, clock=clock)
    a, b, c = admission.enter(), admission.enter(), admission.enter()  # all admitted at 0
    clock.now = 10.0
    a.release(completed=True)  # 10 s: it had the model from 0
    assert admission.retry_after() == 10
    clock.now = 16.0
    b.release(completed=True)  # waited for a until 10, then 6 s: 0.3 * 6 + 0.7 * 10 = 8.8
    assert admission.retry_after() == 9
    clock.now = 17.0
    c.release()  # closed before its end: not timed
    assert admission.retry_after() == 9
    clock.now = 100.0
    d = admission.enter()
    clock.now = 100.2
    d.release(completed=True)  # the model was idle: 0.2 s from admission; 0.06 + 6.16 = 6.22
    assert admission.retry_after() == 7


def test_retry_after_is_at_least_one_second():
    clock = Clock()
    admission = Admission(1, clock=clock)
    place = admission.enter()
    clock.now = 0.01
    place.release(completed=True)
    assert admission.retry_after() == 1


def test_the_default_bound_comes_from_the_model_and_the_setting_wins():
    assert queue_limit(None, parallel=False) == LOCAL_QUEUE == 8
    assert queue_limit(None, parallel=True) == REMOTE_QUEUE > LOCAL_QUEUE
    assert queue_limit(3, parallel=True) == 3
    calls = iter([1, 2])
    admission = Admission(lambda: next(calls))  # asked at each enter: the second one sees room for 2
    admission.enter()
    admission.enter()


def test_max_queued_is_read_from_the_environment(monkeypatch, settings):
    monkeypatch.setenv("KB_SERVER__MAX_QUEUED", "3")
    assert Settings().server.max_queued == 3
    monkeypatch.setenv("KB_SERVER__MAX_QUEUED", "0")
    with pytest.raises(ValueError):
        Settings()


@pytest.fixture
def service(sample_home, tmp_path):
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(["Hourly snapshots are kept for 48 hours [1]."]), encoding="utf-8")
    s = Settings(home=sample_home, kb="samples", llm={"backend": "scripted", "model": str(replies)},
                 server={"max_queued": 1})
    service = AnswerService(s)
    yield service
    service.close()


def _full(service: AnswerService) -> bool:
    """Whether the one place is taken (a second answer is refused)."""
    try:
        service.answer(None, Q).close()
    except BusyError:
        return True
    return False


def test_a_place_comes_back_however_the_answer_ends(service):
    def ends(finish) -> None:
        stream = service.answer(None, Q)
        assert _full(service)
        finish(stream)
        assert service.admission.held == 0 and not _full(service)

    ends(lambda s: "".join(s))  # read to its end
    ends(lambda s: s.answer())  # only its Answer asked for
    ends(lambda s: (s.stop(), s.answer()))  # stopped (a client went away)
    ends(lambda s: s.close())  # closed without being read
    ends(lambda s: (next(iter(s)), s.close()))  # closed half-way


def test_a_place_comes_back_when_the_answer_fails_or_is_dropped(service):
    stream = service.answer(None, "   ")  # the chain refuses an empty question when it starts
    with pytest.raises(KBError):
        list(stream)
    assert service.admission.held == 0
    with pytest.raises(ConfigError):  # fails before a stream exists
        service.answer(None, Q, answer_mode="nonsense")
    assert service.admission.held == 0
    stream = service.answer(None, Q)
    assert _full(service)
    del stream  # never read, never closed
    gc.collect()
    assert service.admission.held == 0


def test_quoted_answers_use_no_model_and_are_not_counted(service):
    held = service.answer(None, Q)
    quoted = service.answer(None, Q, answer_mode="extract")
    assert quoted.answer().answer_mode == "extract"
    assert service.admission.held == 1
    assert held.answer().status == "answered"
    assert service.admission.held == 0
