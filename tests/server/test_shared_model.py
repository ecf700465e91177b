"""One model per process, shared by concurrent requests, and a client that hangs up stops its answer.

The model is a slow backend registered through the real factory, which records how many generations run at
once and whether its stream was closed."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serverkit import KEY, running, server_settings

from kb.llm.base import ChatBackend, register_backend
from kb.llm.shared import shared_backend

Q = "How long are hourly snapshots kept?"


class SlowModel(ChatBackend):
    """Writes `words` words, one every `delay` seconds."""

    name = "slow"
    instances: list[SlowModel] = []

    def __init__(self) -> None:
        self.words = 5
        self.delay = 0.02
        self.running = 0
        self.most = 0
        self.streams: list[dict] = []
        self.lock = threading.Lock()
        self.began = threading.Event()  # set when a stream begins (a test clears it before its request)
        SlowModel.instances.append(self)

    def stream(self, messages, **gen):
        record = {"sent": 0, "closed": False, "finished": False, "gen": gen, "ended": threading.Event()}
        self.streams.append(record)
        self.began.set()
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            for i in range(self.words):
                time.sleep(self.delay)
                record["sent"] += 1
                yield f"word{i} "
            record["finished"] = True
        finally:
            record["closed"] = True
            with self.lock:
                self.running -= 1
            record["ended"].set()

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@pytest.fixture(scope="module")
def slow_server(sample_home, tmp_path_factory):
    register_backend("slow", lambda settings: SlowModel())
    SlowModel.instances.clear()
    settings = server_settings(sample_home, tmp_path_factory.mktemp("slow"), llm={"backend": "slow", "model": ""})
    with running(settings) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                                 timeout=60) as client:
        client.post("/v1/kbs/samples/ask", json={"question": Q}).raise_for_status()  # loads the model
        model = SlowModel.instances[0]
        model.shared = shared_backend(settings.llm)  # the server's view of it: generations take turns there
        yield client, model


def _hang_up_once_generating(client: httpx.Client, model: SlowModel, path: str, body: dict) -> dict:
    """Send a request on a socket of its own and close it as soon as the model begins writing: a client that
    goes away mid-answer. Returns the record of the model's stream that was running then."""
    url = client.base_url
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    model.began.clear()
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(head + data)
        assert model.began.wait(60), "the model was never asked"
    return model.streams[-1]


def _freed(model: SlowModel) -> bool:
    """Whether the server's shared model is free (its lock is let go just after the stream's end: a moment)."""
    deadline = time.monotonic() + 60  # a safety net, not the condition
    while model.shared.busy and time.monotonic() < deadline:
        time.sleep(0.001)
    return not model.shared.busy


def _stopped(record: dict) -> bool:
    """Whether the model's stream was closed before it wrote everything (waits for it to end; 60 s at most)."""
    return record["ended"].wait(60) and record["closed"] and not record["finished"]


def _chat(client: httpx.Client, stream: bool = False) -> dict:
    return {"model": "kb:samples", "stream": stream, "messages": [{"role": "user", "content": Q}]}


def test_concurrent_requests_share_one_model_one_generation_at_a_time(slow_server):
    client, model = slow_server
    model.words, model.most = 5, 0
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: client.post("/v1/chat/completions", json=_chat(client)), range(6)))
    assert [r.status_code for r in results] == [200] * 6
    assert {r.json()["choices"][0]["message"]["content"] for r in results} == {"word0 word1 word2 word3 word4"}
    assert len(SlowModel.instances) == 1 and model.most == 1


def test_client_disconnect_stops_generation_and_frees_the_model(slow_server):
    client, model = slow_server
    model.words = 2000  # 40 s if nobody stops it
    with client.stream("POST", "/v1/chat/completions", json=_chat(client, stream=True)) as r:
        for line in r.iter_lines():
            if '"content":"word2' in line:  # generation has started: hang up
                break
        else:
            pytest.fail("no words streamed")
    assert _stopped(model.streams[-1])
    assert _freed(model)  # the model is free again: the next request need not wait
    model.words = 3
    r = client.post("/v1/chat/completions", json=_chat(client))
    assert r.json()["choices"][0]["message"]["content"] == "word0 word1 word2"


def test_disconnect_during_a_plain_answer_stops_it_too(slow_server):
    client, model = slow_server
    model.words = 2000  # 40 s if nobody stops it
    record = _hang_up_once_generating(client, model, "/v1/kbs/samples/ask", {"question": Q})
    assert _stopped(record)
    assert _freed(model)


def test_request_sampling_reaches_the_model_and_max_tokens_only_shortens(slow_server):
    client, model = slow_server
    model.words = 3
    body = {**_chat(client), "temperature": 0.7, "top_p": 0.5, "max_tokens": 20}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    gen = model.streams[-1]["gen"]
    assert gen["temperature"] == 0.7 and gen["top_p"] == 0.5 and gen["max_new_tokens"] == 20
    body["max_tokens"] = 100_000  # more than the room the prompt left (answer.answer_tokens, 384)
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert model.streams[-1]["gen"]["max_new_tokens"] == 384
    assert client.post("/v1/chat/completions", json={**body, "temperature": 3}).status_code == 422
