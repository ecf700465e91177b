"""Run `kb` as a user does (a subprocess with its own KB_HOME) and measure what it costs.

Peak memory is the largest sum of resident memory over the `kb` process and all its children (the
parse worker included), sampled every 50 ms from /proc: what the machine actually had to hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def kb_env(home: Path, **extra: str) -> dict[str, str]:
    # A user's own KB_HOME, but the test session's models folder (tests/conftest.py): building the default
    # embedder in every KB_HOME would cost each `kb` call 10 s and 520 MB of disk.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_") or k == "KB_EMBEDDING__CACHE_DIR"}
    return {**env, "KB_HOME": str(home), "KB_CONFIG": str(home / "none.yaml"), **extra}


def kb_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kb.cli", *args]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_kb(home: Path, *args: str, timeout: float = 600, **popen) -> tuple[subprocess.CompletedProcess, int]:
    """(finished process with text stdout/stderr, peak resident bytes of its process tree)."""
    proc = subprocess.Popen(kb_cmd(*args), env=popen.pop("env", None) or kb_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), peak[0]


def ingest_json(home: Path, *args: str, **kw) -> tuple[int, dict, int]:
    """`kb ingest ... --json`: (exit status, parsed report, peak resident bytes)."""
    done, peak = run_kb(home, "ingest", *args, "--json", "--quiet", **kw)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"kb ingest printed no JSON (exit {done.returncode}):\n{done.stderr[-3000:]}") from e
    return done.returncode, report, peak


def note(detail: str) -> None:
    """Attach a measured figure to the running test, for the table tests/reliability/report.py prints."""
    path = os.environ.get("RELIABILITY_NOTES")
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": test, "detail": detail}, ensure_ascii=False) + "\n")
