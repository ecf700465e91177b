"""The openai backend against a real HTTP server started here, with canned replies (JSON and SSE)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("langchain_openai")

from kb.config import LLMSettings  # noqa: E402
from kb.errors import ConfigError, ModelError  # noqa: E402
from kb.llm.base import Message, load_backend  # noqa: E402
from kb.llm.langchain_adapter import as_chat_model  # noqa: E402

REPLY = ["ChatGLM2 ", "answers ", "from the ", "server."]


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if body["model"] != "chatglm2-6b":
            return self._send(404, {"error": {"message": f"model {body['model']} not found", "type": "nf"}})
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i, piece in enumerate(REPLY):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece} if i == 0
                                      else {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return None
        return self._send(200, {"id": "c2", "object": "chat.completion", "created": 0, "model": body["model"],
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(REPLY)},
                                             "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _backend(url: str, model: str = "chatglm2-6b"):
    return load_backend(LLMSettings(backend="openai", model=model, openai={"base_url": url, "api_key": "sk-test"},
                                    temperature=0.3, top_p=0.9, max_new_tokens=64))


def test_streams_over_sse_and_sends_the_settings(server):
    _Handler.requests.clear()
    backend = _backend(server)
    pieces = list(backend.stream([Message("system", "Be brief."), Message("user", "你好")], max_new_tokens=32))
    assert pieces == REPLY
    req = _Handler.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "chatglm2-6b" and body["stream"] is True
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (32, 0.3, 0.9)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]


def test_langchain_model_invokes_and_streams(server):
    model = as_chat_model(_backend(server))
    assert model.invoke("hello").content == "".join(REPLY)
    assert [c.content for c in model.stream("hello") if c.content] == REPLY  # LangChain adds an empty last chunk


def test_errors_name_the_fix(server):
    with pytest.raises(ModelError, match="refused the request for model 'nope'.*404"):
        _backend(server, model="nope").generate([Message("user", "hi")])
    with pytest.raises(ModelError, match="could not reach"):
        _backend("http://127.0.0.1:9/v1").generate([Message("user", "hi")])
    with pytest.raises(ConfigError, match="base_url is empty"):
        load_backend(LLMSettings(backend="openai", model="m"))
    with pytest.raises(ConfigError, match="--lora-modules"):
        load_backend(LLMSettings(backend="openai", openai={"base_url": server}, model="m", adapter="/models/lora"))


def test_token_estimates():
    backend = _backend("http://127.0.0.1:9/v1")
    assert backend.count_tokens("知识库") == 3 and backend.count_tokens("abcdefgh") == 2
    assert backend.context_window == 8192
