"""Child processes that end with the process that started them.

Why: a `kb ingest` killed with SIGKILL, or by the OOM killer, runs no cleanup. Its spawn parse worker then
lived on for good (reparented to PID 1, about 720 MB resident, blocked writing to a result pipe whose both
ends it held itself), and a LibreOffice conversion ran on with no one to read its result. Now every process
kb starts goes when its parent goes:

- `die_with_parent(parent_pid)`, called first in a Python child (the parse worker's pool initializer): on
  Linux the kernel sends the child SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`); elsewhere a
  daemon thread polls `os.getppid()` every POLL_SECONDS. A parent that died before the call (the child was
  still starting) is caught by comparing `os.getppid()` with the pid the parent passed; the worker then goes
  when its start-up reaches the initializer (at most about 1.6 s on the 2-core test machine).
- `run(cmd, timeout)`, for external commands (tesseract, LibreOffice): the command runs under a watcher, this
  file run as a script by the same Python (`python -I -S orphans.py PARENT_PID CMD...`: about 40 ms, stdlib
  only). The watcher leads a process group of its own, which the command and all it starts inherit; when the
  watcher's parent dies (PDEATHSIG as SIGTERM, or the poll) it kills the whole group, itself included. That
  reaches LibreOffice's soffice.bin, which oosplash forks: PDEATHSIG on the command alone would end oosplash
  and leave soffice.bin running (measured with LibreOffice 7.4: it converts on to the end of the file). A
  timeout or an exception in the caller (Ctrl-C) kills the group too. No `preexec_fn`: it is not safe in a
  process with threads (torch, onnxruntime and tokenizers all start some), and the watcher needs none.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not its process. CPython 3.11's
ProcessPoolExecutor with the spawn context starts its worker in the thread that calls `submit`
(`submit` → `_adjust_process_count` → `_spawn_process`); its manager thread starts one only to replace a
worker retired by `max_tasks_per_child`, which kb does not set. In ingest/parse.py that is the thread that
iterates `parsed`, and it leaves the pool's `with` block (which joins the worker) before it can end. `run`'s
caller waits for the watcher in the thread that started it.

Measured (tests/reliability/test_killed_children.py, 2 cores): from the SIGKILL of `kb ingest` to its last
process gone, 0.1-0.3 s with the parse worker running (most of it the kernel freeing the worker's memory;
multiprocessing's resource tracker goes last, once the worker's end of its pipe closes), 0.3 s with tesseract
or LibreOffice converting. Before, the worker and the tracker were still there ten minutes later.

Left out: Windows (nothing is reparented there and there is no PDEATHSIG; a job object would do it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

POLL_SECONDS = 0.2  # without PDEATHSIG: how often a child looks whether its parent is still there
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """End this process with SIGKILL when `parent_pid`, the process that started it, dies (now, if it has)."""
    _on_parent_death(parent_pid, signal.SIGKILL, lambda: os.kill(os.getpid(), signal.SIGKILL))


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` (stdin empty, text output captured) so that it, and everything it starts, dies with this process.

    Raises subprocess.TimeoutExpired after `timeout` seconds; the command's processes are killed first, as
    they are when anything else (KeyboardInterrupt) interrupts the wait."""
    watcher = [sys.executable, "-I", "-S", __file__, str(os.getpid()), *cmd]
    proc = subprocess.Popen(watcher, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group `proc` leads (started with start_new_session=True) and reap `proc`."""
    try:  # the leader is not reaped yet, so its id still names this group and no other
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _on_parent_death(parent_pid: int, sig: signal.Signals, act: Callable[[], object]) -> None:
    if _set_pdeathsig(sig):
        if os.getppid() != parent_pid:  # it died before the prctl: no signal will come
            act()
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_SECONDS)
        act()

    threading.Thread(target=watch, name="kb-parent-watch", daemon=True).start()


def _set_pdeathsig(sig: signal.Signals) -> bool:
    """Have the kernel send `sig` to this process when its parent dies (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill_own_group(*_: object) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _watch(parent_pid: int, cmd: list[str]) -> int:
    """The watcher: run `cmd` in this process group; kill the group when `parent_pid` dies. Returns its status."""
    if os.getpgrp() != os.getpid():  # `run` starts it as a group leader; make sure when run otherwise
        os.setsid()
    signal.signal(signal.SIGTERM, _kill_own_group)  # what PDEATHSIG sends here, and a plain `kill` of it
    _on_parent_death(parent_pid, signal.SIGTERM, _kill_own_group)
    try:
        child = subprocess.Popen(cmd)
    except OSError as e:
        print(f"{cmd[0]}: {e.strerror or e}", file=sys.stderr)
        return 127
    status = child.wait()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(_watch(int(sys.argv[1]), sys.argv[2:]))
