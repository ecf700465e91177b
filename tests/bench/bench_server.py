"""Load on `kb serve` with the embedded models (MiniLM embedder + SmolLM2-135M GGUF), on loopback.

    python tests/bench/bench_server.py                    # 20 clients, 60 s, a temporary KB over docs/samples
    python tests/bench/bench_server.py --clients 5 --seconds 20
    python tests/bench/bench_server.py --max-queued 1000  # as before server.max_queued: no bound in practice
    python tests/bench/bench_server.py --answer-mode auto  # the KB's own mode (SmolLM2: quotes, no model call)

It builds a KB over docs/samples in a temporary KB_HOME, starts `kb serve` in a child process (the real
command, default settings but an API key), warms it up (one search, one answer), then runs N client
threads for the given time. Each client repeats the cycle search, search, search, search, chat: four
`POST /v1/kbs/samples/search` (the cheap, frequent call) and one `POST /v1/chat/completions` with model
kb:samples (alternately plain and streamed, read to [DONE]), in answer mode generate by default, so that every
answer is written by the model (in mode auto the embedded SmolLM2 quotes the passages instead, which takes no
model time). Questions rotate over English sample questions.
No request starts after the time is up; those in flight finish (300 s timeout each). A chat refused with 429
(server.max_queued, `--max-queued N` sets KB_SERVER__MAX_QUEUED) is counted apart, not as an error; its client
waits the Retry-After it was given (at most until the time is up), as OpenAI's client does, then goes on with
its cycle. Prints requests/s, p50/p95 latency per route, the chats accepted / refused (429) / failed, and the
wait of the accepted ones: to the response's first byte (a stream's status line comes with its first piece; a
plain answer's with the whole answer) and in total. Every error is listed (a non-200 status other than 429, a
transport error, or a stream without [DONE]). Exit status 1 if there was any error.
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


def _start(home: Path, port: int, max_queued: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_HOME=str(home), KB_CONFIG=str(home / "none.yaml"), KB_SERVER__API_KEY=KEY)
    if max_queued is not None:
        env["KB_SERVER__MAX_QUEUED"] = str(max_queued)
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


class Chat:
    """One chat's outcome: "ok", "busy" (429) or "error" (`problem` says what), and its times in seconds."""

    def __init__(self, outcome: str, first_byte: float, total: float, problem: str = "", retry_after: int = 0):
        self.outcome, self.first_byte, self.total = outcome, first_byte, total
        self.problem, self.retry_after = problem, retry_after


def _chat(client: httpx.Client, question: str, stream: bool, mode: str = "generate") -> Chat:
    """One chat completion, timed from sending it to its response's first byte and to its end."""
    body = {"model": "kb:samples", "stream": stream, "messages": [{"role": "user", "content": question}],
            "answer_mode": None if mode == "auto" else mode}
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        first = time.perf_counter() - start
        if r.status_code == 429:
            r.read()
            retry = r.headers.get("Retry-After", "")
            if not retry.isdigit() or r.json()["error"]["code"] != "rate_limit_exceeded":
                return Chat("error", first, first, f"429 without Retry-After or its code: {r.text[:200]}")
            return Chat("busy", first, time.perf_counter() - start, retry_after=int(retry))
        if r.status_code != 200:
            r.read()
            return Chat("error", first, first, f"chat{'-stream' if stream else ''} {r.status_code}: {r.text[:200]}")
        if stream:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            ok = bool(lines) and lines[-1] == "data: [DONE]"
            problem = "" if ok else f"chat-stream ended without [DONE]: {lines[-1:]}"
        else:
            r.read()
            ok = bool(r.json()["choices"][0]["message"]["content"])
            problem = "" if ok else f"chat {r.status_code}: empty answer"
    return Chat("ok" if ok else "error", first, time.perf_counter() - start, problem)


def _client(n: int, url: str, until: float, mode: str, times: dict, chats: list, errors: list,
            lock: threading.Lock) -> None:
    cycle = ["search"] * 4 + ["chat"]
    i = n  # clients start at different points of the cycle and of the question list
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        while time.monotonic() < until:
            kind, question = cycle[i % len(cycle)], QUESTIONS[i % len(QUESTIONS)]
            route = "search" if kind == "search" else ("chat-stream" if (i // len(cycle)) % 2 else "chat")
            start = time.perf_counter()
            chat = None
            try:
                if kind == "search":
                    r = client.post("/v1/kbs/samples/search", json={"query": question, "k": 5})
                    problem = None if r.status_code == 200 and r.json()["hits"] else f"search {r.status_code}"
                else:
                    chat = _chat(client, question, route == "chat-stream", mode)
                    problem = chat.problem or None
            except httpx.HTTPError as e:
                problem = f"{route}: {type(e).__name__}: {e}"
                chat = Chat("error", 0.0, 0.0, problem) if kind == "chat" else None
            elapsed = time.perf_counter() - start
            with lock:
                if chat is None or chat.outcome == "ok":
                    times[route].append(elapsed)
                if chat is not None:
                    chats.append(chat)
                if problem:
                    errors.append(problem)
            if chat is not None and chat.outcome == "busy":  # back off as told, as OpenAI's client does
                time.sleep(max(0.0, min(chat.retry_after, until - time.monotonic())))
            i += 1


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-queued", type=int, default=None,
                        help="server.max_queued for the server (default: the model's, 8 for SmolLM2); "
                             "a large number (1000) stands for the unbounded queue of before")
    parser.add_argument("--answer-mode", choices=("generate", "extract", "auto"), default="generate",
                        help="the chats' answer_mode (auto: the KB's answer.mode)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kb-bench-server-"))
    try:
        from kb import KnowledgeBase
        from kb.config import Settings

        docs = shutil.copytree(ROOT / "docs" / "samples", home / "docs")
        with KnowledgeBase.open("samples", settings=Settings(home=home)) as kb:
            kb.ingest(docs)
        port = _free_port()
        proc = _start(home, port, args.max_queued)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as c:
                warm = [c.post("/v1/kbs/samples/search", json={"query": QUESTIONS[0]}).status_code,
                        _chat(c, QUESTIONS[0], False, args.answer_mode).outcome]
                print(f"warm-up: search {warm[0]}, chat {warm[1]}", flush=True)
            times: dict[str, list[float]] = defaultdict(list)
            chats: list[Chat] = []
            errors: list[str] = []
            lock = threading.Lock()
            start = time.monotonic()
            until = start + args.seconds
            shared = (times, chats, errors, lock)
            threads = [threading.Thread(target=_client, args=(n, url, until, args.answer_mode, *shared))
                       for n in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        _report(args, wall, times, chats, errors)
        return 1 if errors else 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _report(args, wall: float, times: dict, chats: list[Chat], errors: list[str]) -> None:
    total = sum(len(v) for v in times.values())
    queue = "server default" if args.max_queued is None else args.max_queued
    print(f"{args.clients} clients, {args.seconds:g} s of new requests, {wall:.1f} s until the last finished, "
          f"max_queued {queue}, answer mode {args.answer_mode}")
    print(f"requests: {total} completed, {total / wall:.1f} requests/s, errors: {len(errors)}")
    count = {o: sum(c.outcome == o for c in chats) for o in ("ok", "busy", "error")}
    print(f"chats: {count['ok']} accepted, {count['busy']} refused (429), {count['error']} errors")
    accepted = [c for c in chats if c.outcome == "ok"]
    if accepted:
        first, whole = [c.first_byte for c in accepted], [c.total for c in accepted]
        print(f"  accepted wait  first byte p50 {_pct(first, 50):6.1f} s  p95 {_pct(first, 95):6.1f} s   "
              f"total p50 {_pct(whole, 50):6.1f} s  p95 {_pct(whole, 95):6.1f} s")
    busy = [c for c in chats if c.outcome == "busy"]
    if busy:
        retry, took = [float(c.retry_after) for c in busy], [c.total * 1000 for c in busy]
        print(f"  refused        answered in p50 {_pct(took, 50):.0f} ms  p95 {_pct(took, 95):.0f} ms   "
              f"Retry-After p50 {_pct(retry, 50):.0f} s  max {max(retry):.0f} s")
    for route in sorted(times):  # completed requests: searches, and the chats that were accepted
        v = times[route]
        print(f"  {route:<12} n={len(v):<5} {len(v) / wall:6.2f}/s  p50 {_pct(v, 50) * 1000:8.0f} ms  "
              f"p95 {_pct(v, 95) * 1000:8.0f} ms")
    for e in errors[:20]:
        print("  error:", e)


if __name__ == "__main__":
    sys.exit(main())
