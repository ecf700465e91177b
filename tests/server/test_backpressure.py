"""Back-pressure: past server.max_queued answers running or waiting for the model, chat and ask answer 429 with
Retry-After at once; what was accepted completes, streams included; a client that hangs up frees its place; search
and quoted (extract) answers never wait for the model.

The model is a backend registered through the real factory whose words wait for a gate the test opens, so
"running or waiting" lasts exactly as long as a test needs, with no timing guesses."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from serverkit import KEY, REPLY, running, server_settings

from kb.llm.base import ChatBackend, register_backend

Q = "How long are hourly snapshots kept?"
DEADLINE = 60  # seconds: a safety net for waits on events, never the condition a test checks


class GatedModel(ChatBackend):
    """Writes REPLY word by word (or `words` filler words), each word once `gate` is open, `delay` s apart."""

    name = "gated"
    languages = ("en",)  # one model call per answer: no translation of the question is asked for

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.words: int | None = None  # None: REPLY (which cites [1])
        self.delay = 0.0
        self.streams: list[dict] = []

    def stream(self, messages, **gen):
        record = {"sent": 0, "finished": False, "ended": threading.Event()}
        self.streams.append(record)
        words = [f"word{i} " for i in range(self.words)] if self.words else [w + " " for w in REPLY.split()]
        try:
            for word in words:
                assert self.gate.wait(DEADLINE), "the test never opened the gate"
                time.sleep(self.delay)
                record["sent"] += 1
                yield word
            record["finished"] = True
        finally:
            record["ended"].set()

    def count_tokens(self, text: str) -> int:
        return len(text.split())


MODEL = GatedModel()


@pytest.fixture(scope="module")
def make_server(sample_home, tmp_path_factory):
    """make_server(max_queued) -> a client of a server whose model is MODEL (gate open, REPLY)."""
    register_backend("gated", lambda settings: MODEL)
    opened = []

    def make(max_queued: int) -> httpx.Client:
        settings = server_settings(sample_home, tmp_path_factory.mktemp("bp"), llm={"backend": "gated", "model": ""},
                                   server={"max_queued": max_queued})
        server = running(settings)
        url = server.__enter__()
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=DEADLINE)
        opened.append((server, client))
        return client

    yield make
    MODEL.gate.set()
    for server, client in opened:
        client.close()
        server.__exit__(None, None, None)


@pytest.fixture
def model():
    MODEL.gate.set()
    MODEL.words, MODEL.delay = None, 0.0
    yield MODEL
    MODEL.gate.set()  # nothing stays blocked for the next test


@pytest.fixture(scope="module")
def two(make_server) -> httpx.Client:
    """A server with server.max_queued 2; its model loaded by a first answer."""
    client = make_server(2)
    MODEL.gate.set()
    client.post("/v1/kbs/samples/ask", json={"question": Q}).raise_for_status()
    return client


def _chat(stream: bool = False, **extra) -> dict:
    return {"model": "kb:samples", "stream": stream, "messages": [{"role": "user", "content": Q}], **extra}


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _refused(r: httpx.Response) -> bool:
    """A 429 in OpenAI's shape with an integer Retry-After of at least 1 s and a message that says what to do."""
    if r.status_code != 429:
        return False
    error = r.json()["error"]
    retry = r.headers.get("Retry-After", "")
    return (error["code"] == "rate_limit_exceeded" and error["type"] == "requests" and "server.max_queued" in
            error["message"] and "try again in about" in error["message"] and retry.isdigit() and int(retry) >= 1)


def _burst(client: httpx.Client, pool: ThreadPoolExecutor, send, n: int = 10) -> list[Future]:
    """n requests at once, the model's gate shut: the refused ones come back, the accepted ones wait on it."""
    MODEL.gate.clear()
    futures = [pool.submit(send, client) for _ in range(n)]
    _wait_until(lambda: sum(f.done() for f in futures) >= n - 2, f"{n - 2} requests were answered")
    return futures


def _post_chat(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/chat/completions", json=_chat())


def test_past_the_bound_chats_get_429_with_retry_after_and_the_accepted_ones_complete(two, model):
    with ThreadPoolExecutor(10) as pool:
        futures = _burst(two, pool, _post_chat)
        refused = [f.result() for f in futures if f.done()]
        waiting = [f for f in futures if not f.done()]
        assert len(refused) == 8 and all(_refused(r) for r in refused), [(r.status_code, r.text) for r in refused]
        assert len(waiting) == 2  # running or waiting for the model
        model.gate.set()
        accepted = [f.result() for f in waiting]
    assert [r.status_code for r in accepted] == [200, 200]
    for r in accepted:
        body = r.json()
        assert body["kb_status"] == "answered" and body["choices"][0]["message"]["content"].startswith("Hourly")
        assert any(c["path"].endswith("backup-policy.html") for c in body["citations"])


def _stream_chat(client: httpx.Client) -> tuple[int, str, list[str]]:
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.text, [r.headers.get("Retry-After", "")]
        return 200, "", list(r.iter_lines())


def test_a_stream_is_refused_before_it_starts_and_an_accepted_one_runs_to_done(two, model):
    with ThreadPoolExecutor(10) as pool:
        futures = _burst(two, pool, _stream_chat)
        refused = [f.result() for f in futures if f.done()]
        waiting = [f for f in futures if not f.done()]
        assert len(refused) == 8 and len(waiting) == 2
        for status, text, (retry,) in refused:  # an ordinary JSON error: no stream was begun
            assert status == 429 and '"rate_limit_exceeded"' in text and retry.isdigit() and int(retry) >= 1
        model.gate.set()
        accepted = [f.result() for f in waiting]
    assert [status for status, _, _ in accepted] == [200, 200]
    for _, _, lines in accepted:
        events = [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert '"citations"' in events[-2] and "backup-policy.html" in events[-2]


def test_ask_is_refused_the_same_way(two, model):
    with ThreadPoolExecutor(4) as pool:
        futures = _burst(two, pool, lambda c: c.post("/v1/kbs/samples/ask", json={"question": Q}), n=4)
        refused = [f.result() for f in futures if f.done()]
        assert len(refused) == 2 and all(_refused(r) for r in refused)
        model.gate.set()
        assert sorted(f.result().status_code for f in futures) == [200, 200, 429, 429]


def test_search_and_quoted_answers_do_not_wait_for_a_full_queue(two, model):
    with ThreadPoolExecutor(3) as pool:
        futures = _burst(two, pool, _post_chat, n=3)  # one refused: the other two fill the queue
        chats = [f for f in futures if not f.done()]
        search = two.post("/v1/kbs/samples/search", json={"query": "hourly snapshots", "k": 3})
        quoted = two.post("/v1/chat/completions", json=_chat(answer_mode="extract"))
        assert not any(c.done() for c in chats)  # both answered while the queue was still full
        model.gate.set()
        assert [c.result().status_code for c in chats] == [200, 200]
    assert search.status_code == 200 and search.json()["hits"][0]["path"].endswith("backup-policy.html")
    assert quoted.status_code == 200 and quoted.json()["kb_status"] == "answered"


def test_a_client_that_hangs_up_mid_stream_frees_its_place(make_server, model):
    one = make_server(1)
    model.words, model.delay = 2000, 0.02  # 40 s if nobody stops it
    with one.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if "word2" in line:  # it is running: hang up
                break
        else:
            pytest.fail("no words streamed")
    record = model.streams[-1]
    model.words = 3
    _wait_until(lambda: _post_chat(one).status_code == 200, "a following chat was accepted")
    assert record["ended"].wait(DEADLINE) and not record["finished"]  # the model stopped writing it


OFF_TOPIC = "What is the airspeed velocity of an unladen swallow?"  # no passage: refused without the model


def _probe(client: httpx.Client) -> int:
    """A chat that takes a place but never the model: 429 while the queue is full, else a quick refusal (200)."""
    r = client.post("/v1/chat/completions", json={**_chat(), "messages": [{"role": "user", "content": OFF_TOPIC}]})
    assert r.status_code == 429 or r.json()["kb_status"] == "refused", r.text
    return r.status_code


def _send(url: httpx.URL, request: bytes) -> socket.socket:
    sock = socket.create_connection((url.host, url.port))
    sock.sendall(request)
    return sock


def test_a_client_that_hangs_up_while_waiting_for_the_model_frees_its_place_at_once(two, model):
    url = two.base_url
    data = json.dumps(_chat()).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    with ThreadPoolExecutor(1) as pool:
        model.gate.clear()
        streams = len(model.streams)
        running = pool.submit(_post_chat, two)
        _wait_until(lambda: len(model.streams) > streams, "the first chat had the model")
        waiting = _send(url, head + data)  # a second chat waits for the model
        try:
            deadline = time.monotonic() + DEADLINE
            while _probe(two) != 429:
                assert time.monotonic() < deadline, "timed out waiting until the queue was full"
                if select.select([waiting], [], [], 0)[0]:  # answered: refused while a probe held the 2nd place
                    waiting.close()
                    waiting = _send(url, head + data)
                time.sleep(0.01)
        finally:
            waiting.close()  # hang up
        _wait_until(lambda: _probe(two) == 200, "the place of the client that hung up was free")
        assert not running.done()  # while the first answer still holds the model
        model.gate.set()
        assert running.result().status_code == 200
    assert len(model.streams) == streams + 1  # the model never wrote for the client that hung up


def test_the_api_schema_declares_the_429_and_its_retry_after(two):
    paths = two.get("/openapi.json").json()["paths"]
    for path in ("/v1/chat/completions", "/v1/kbs/{name}/ask"):
        busy = paths[path]["post"]["responses"]["429"]
        assert "Retry-After" in busy["headers"] and "server.max_queued" in busy["description"]
    assert "429" not in paths["/v1/kbs/{name}/search"]["post"]["responses"]
