"""Processes kb starts die with their parent (ingest/orphans.py): a command run through `orphans.run` and all
it starts, and a Python child that called `die_with_parent`, by PDEATHSIG and by the poll used where there is
none. The parent is a real process killed with SIGKILL; tests/processes.py finds what is left by an
environment marker. A real `kb ingest` killed mid-parse: tests/reliability/test_orphans.py (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from processes import Marker

from kb.ingest import orphans

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

NO_PDEATHSIG = "orphans._set_pdeathsig = lambda sig: False; "  # the parent watch of macOS and the BSDs


def _parent(marker: Marker, code: str, ready: str) -> subprocess.Popen:
    """A Python process running `code` (with `orphans` imported); returns once a marked command starting with
    `ready` runs."""
    parent = subprocess.Popen([sys.executable, "-c", "from kb.ingest import orphans; " + code],
                              env={**os.environ, **marker.env})
    if not marker.wait_for(lambda cmd: cmd.startswith(ready), timeout=30):
        parent.kill()
        pytest.fail(f"never saw {ready!r}: {marker.processes()}")
    return parent


def _kill_and_wait(parent: subprocess.Popen, marker: Marker) -> float:
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    left, seconds = marker.wait_gone(timeout=5)
    assert not left, f"still running {seconds:.1f} s after their parent was killed: {left}"
    return seconds


def test_a_command_and_what_it_starts_die_with_the_caller():
    marker = Marker()
    parent = _parent(marker, "orphans.run(['sh', '-c', 'sleep 61 & sleep 62'], timeout=120)", "sleep 62")
    assert marker.wait_for(lambda cmd: cmd == "sleep 61", timeout=10)
    assert len(marker.processes()) == 5  # python, the watcher, sh, two sleeps
    seconds = _kill_and_wait(parent, marker)
    print(f"the watcher, sh and both sleeps were gone {seconds * 1000:.0f} ms after the kill")


def test_a_command_dies_with_the_caller_without_pdeathsig():
    marker = Marker()
    parent = _parent(marker, NO_PDEATHSIG + "orphans.run(['sh', '-c', 'sleep 63 & sleep 64'], timeout=120)",
                     "sleep 64")
    assert _kill_and_wait(parent, marker) < 2 + orphans.POLL_SECONDS


@pytest.mark.parametrize("mode", ["pdeathsig", "poll"])
def test_a_python_child_dies_with_its_parent(mode, tmp_path):
    marker, ready = Marker(), tmp_path / "ready"
    child = ("import os, sys, time; from kb.ingest import orphans; " + (NO_PDEATHSIG if mode == "poll" else "")
             + f"orphans.die_with_parent(os.getppid()); open({str(ready)!r}, 'w').close(); time.sleep(60)")
    parent = _parent(marker, f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
                     sys.executable + " -c import os")
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "the child never called die_with_parent"
    _kill_and_wait(parent, marker)


@pytest.mark.parametrize("mode", ["pdeathsig", "poll"])
def test_a_child_whose_parent_died_while_it_started_ends_at_once(mode):
    # The pid passed is not this child's parent: as if the parent had died and the child were reparented.
    code = ("from kb.ingest import orphans; " + (NO_PDEATHSIG if mode == "poll" else "")
            + "import os, time; orphans.die_with_parent(os.getppid() + 100000); time.sleep(60)")
    done = subprocess.run([sys.executable, "-c", code], timeout=30)
    assert done.returncode == -signal.SIGKILL


def test_a_timeout_kills_the_command_and_what_it_starts():
    marker = Marker()
    started = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        orphans.run(["sh", "-c", "sleep 65 & sleep 66"], timeout=1, env={**os.environ, **marker.env})
    assert time.perf_counter() - started < 5
    left, _ = marker.wait_gone(timeout=2)
    assert not left


def test_the_command_s_output_and_status_come_back():
    done = orphans.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert done.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    missing = orphans.run(["kb-no-such-command"], timeout=30)
    assert missing.returncode == 127 and "kb-no-such-command" in missing.stderr
