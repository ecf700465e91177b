"""Load on `kb serve` with the embedded models (MiniLM embedder + SmolLM2-135M GGUF), on loopback.

    python tests/bench/bench_server.py                    # 20 clients, 60 s, a temporary KB over docs/samples
    python tests/bench/bench_server.py --clients 5 --seconds 20

It builds a KB over docs/samples in a temporary KB_HOME, starts `kb serve` in a child process (the real
command, default settings but an API key), warms it up (one search, one answer), then runs N client
threads for the given time. Each client repeats the cycle search, search, search, search, chat: four
`POST /v1/kbs/samples/search` (the cheap, frequent call) and one `POST /v1/chat/completions` with model
kb:samples (alternately plain and streamed, read to [DONE]). Questions rotate over English sample questions.
No request starts after the time is up; those in flight finish (300 s timeout each). Prints requests/s,
p50/p95 latency per route, and every error (an error is a non-200 status, a transport error, or a stream
without [DONE]). Exit status 1 if there was any error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
from bench_answer import QUESTIONS  # the same sample questions as the answer benchmark

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_HOME=str(home), KB_CONFIG=str(home / "none.yaml"), KB_SERVER__API_KEY=KEY)
    kb = shutil.which("kb") or str(Path(sys.executable).with_name("kb"))
    proc = subprocess.Popen([kb, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(home / "server.log", "wb"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"kb serve did not start; see {home / 'server.log'}")


def _chat(client: httpx.Client, question: str, stream: bool) -> str | None:
    """One chat completion; None if it succeeded, else what went wrong."""
    body = {"model": "kb:samples", "stream": stream, "messages": [{"role": "user", "content": question}]}
    if not stream:
        r = client.post("/v1/chat/completions", json=body)
        if r.status_code != 200 or not r.json()["choices"][0]["message"]["content"]:
            return f"chat {r.status_code}: {r.text[:200]}"
        return None
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return f"chat-stream {r.status_code}: {r.read()[:200]!r}"
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    return None if lines and lines[-1] == "data: [DONE]" else f"chat-stream ended without [DONE]: {lines[-1:]}"


def _client(n: int, url: str, until: float, times: dict, errors: list, lock: threading.Lock) -> None:
    cycle = ["search"] * 4 + ["chat"]
    i = n  # clients start at different points of the cycle and of the question list
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        while time.monotonic() < until:
            kind, question = cycle[i % len(cycle)], QUESTIONS[i % len(QUESTIONS)]
            route = "search" if kind == "search" else ("chat-stream" if (i // len(cycle)) % 2 else "chat")
            start = time.perf_counter()
            try:
                if kind == "search":
                    r = client.post("/v1/kbs/samples/search", json={"query": question, "k": 5})
                    problem = None if r.status_code == 200 and r.json()["hits"] else f"search {r.status_code}"
                else:
                    problem = _chat(client, question, stream=route == "chat-stream")
            except httpx.HTTPError as e:
                problem = f"{route}: {type(e).__name__}: {e}"
            elapsed = time.perf_counter() - start
            with lock:
                times[route].append(elapsed)
                if problem:
                    errors.append(problem)
            i += 1


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kb-bench-server-"))
    try:
        from kb import KnowledgeBase
        from kb.config import Settings

        docs = shutil.copytree(ROOT / "docs" / "samples", home / "docs")
        with KnowledgeBase.open("samples", settings=Settings(home=home)) as kb:
            kb.ingest(docs)
        port = _free_port()
        proc = _start(home, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as c:
                warm = [c.post("/v1/kbs/samples/search", json={"query": QUESTIONS[0]}).status_code,
                        _chat(c, QUESTIONS[0], stream=False)]
                print(f"warm-up: search {warm[0]}, chat {warm[1] or 'ok'}", flush=True)
            times: dict[str, list[float]] = defaultdict(list)
            errors: list[str] = []
            lock = threading.Lock()
            start = time.monotonic()
            until = start + args.seconds
            threads = [threading.Thread(target=_client, args=(n, url, until, times, errors, lock))
                       for n in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        total = sum(len(v) for v in times.values())
        print(f"{args.clients} clients, {args.seconds:g} s of new requests, {wall:.1f} s until the last finished")
        print(f"requests: {total}, {total / wall:.1f} requests/s, errors: {len(errors)}")
        for route in sorted(times):
            v = times[route]
            print(f"  {route:<12} n={len(v):<5} {len(v) / wall:6.2f}/s  p50 {_pct(v, 50) * 1000:8.0f} ms  "
                  f"p95 {_pct(v, 95) * 1000:8.0f} ms")
        for e in errors[:20]:
            print("  error:", e)
        return 1 if errors else 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
