"""Find every process a test started, wherever it was reparented: each carries an environment variable of
the test's own (`Marker.env`), and /proc/<pid>/environ shows it. A process whose parent died belongs to PID 1
(or a subreaper), so walking the children of the killed process would miss exactly the ones that matter.
Linux only (/proc)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MARKER_NAME = "KBTEST_PROCESS_MARK"  # not KB_*: kb reads those as settings


@dataclass(frozen=True)
class Marker:
    value: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def env(self) -> dict[str, str]:
        """Add to the environment of the process the test starts; its descendants inherit it."""
        return {MARKER_NAME: self.value}

    def processes(self) -> dict[int, str]:
        """{pid: command line} of the live processes carrying this marker (a zombie has no environment to show)."""
        tag = f"{MARKER_NAME}={self.value}".encode()
        found = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if tag in (entry / "environ").read_bytes().split(b"\0"):
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(entry.name)] = cmdline.decode(errors="replace").strip()
            except (OSError, ValueError):
                continue
        found.pop(os.getpid(), None)
        return found

    def wait_gone(self, timeout: float) -> tuple[dict[int, str], float]:
        """Poll until no marked process is left or `timeout` seconds pass: (those left, seconds waited)."""
        start = time.perf_counter()
        while (left := self.processes()) and time.perf_counter() - start < timeout:
            time.sleep(0.01)
        return left, time.perf_counter() - start

    def wait_for(self, match: Callable[[str], bool], timeout: float) -> bool:
        """Poll until a marked process runs whose command line (arguments joined by spaces) `match`es."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(match(cmd) for cmd in self.processes().values()):
                return True
            time.sleep(0.02)
        return False
