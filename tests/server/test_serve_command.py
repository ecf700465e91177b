"""`kb serve` itself: the command starts the API from the settings (port, API key); on a network address it
refuses to start without a key unless --no-key is given, and then warns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
from serverkit import KEY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home, *args: str, **env: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    clean.update(KB_HOME=str(home), KB_CONFIG=str(home / "no-config.yaml"), **{"KB_LLM__BACKEND": "scripted", **env})
    return subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", *args], env=clean,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("kb serve did not answer /health within 60 s")


def test_kb_serve_listens_where_the_settings_say_with_the_key(sample_home):
    port = _free_port()
    proc = _serve(sample_home, KB_SERVER__PORT=str(port), KB_SERVER__API_KEY=KEY)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        assert "kb:samples" in [m["id"] for m in models["data"]]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "no API key" not in err


def test_kb_serve_on_all_interfaces_without_a_key_refuses_to_start(sample_home):
    proc = _serve(sample_home, "--host", "0.0.0.0", "--port", str(_free_port()))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "server.api_key" in err and "--no-key" in err and "KB_SERVER__API_KEY" in err
    assert "Traceback" not in err


def test_kb_serve_on_all_interfaces_with_no_key_starts_and_warns(sample_home):
    port = _free_port()
    proc = _serve(sample_home, "--host", "0.0.0.0", "--port", str(port), "--no-key")
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "listening on 0.0.0.0 with no API key" in err and "KB_SERVER__API_KEY" in err


def test_kb_serve_answers_with_the_embedded_model_through_the_openai_client(sample_home):
    from openai import OpenAI

    port = _free_port()
    proc = _serve(sample_home, "--port", str(port), KB_LLM__BACKEND="gguf", KB_LLM__MAX_NEW_TOKENS="48")
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        question = [{"role": "user", "content": "How long are hourly snapshots kept?"}]
        pieces, last = [], None
        for chunk in client.chat.completions.create(model="kb:samples", messages=question, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                last = chunk
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert len("".join(pieces).strip()) > 10
    assert last is not None and last.model_extra["kb_status"] == "answered"
    # SmolLM2 copies sentences from the passages; kb cites them (by marker or by overlap)
    cited = {c["path"].rsplit("/", 1)[-1] for c in last.model_extra["citations"]}
    assert "backup-policy.html" in cited, cited
