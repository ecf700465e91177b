"""Helpers for the HTTP tests: `kb serve`'s app under uvicorn in a thread of the test process (so a test can
look at the model a request used), and settings that answer with the deterministic scripted backend."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kb.config import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
KEY = "test-key-123"
REPLY = "Hourly snapshots are kept for 48 hours [1]."


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[str]:
    """`create_app(settings)` served by uvicorn on a free loopback port; yields the base URL."""
    from kb.server.app import create_app

    with serving(create_app(settings)) as url:
        yield url


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def server_settings(home: Path, tmp: Path, **overrides) -> Settings:
    replies = tmp / "replies.json"
    replies.write_text(json.dumps([REPLY]), encoding="utf-8")
    llm = {"backend": "scripted", "model": str(replies), "temperature": 0, **overrides.pop("llm", {})}
    server = {"api_key": KEY, **overrides.pop("server", {})}
    return Settings(home=home, llm=llm, server=server, **overrides)


def free_port() -> int:
    """A loopback port nobody listens on (for a server started in a child process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
