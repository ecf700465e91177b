"""How many CPU cores other processes leave free, for sizing a local model's threads just before it runs.

llama.cpp's threads wait for each other at every step of a forward pass. When another process holds one of
their cores, each wait lasts a scheduler time slice: on a 2-core machine shared with one busy process, two
threads read a 150-token prompt in 1.4-8 s where one thread takes 0.9-1.1 s; on an idle machine two take
0.5 s. So a backend asks, just before a prompt, how much CPU time other processes used since it last looked
(this process's own work, its loading and retrieval, does not count) and uses only the cores they leave.
Linux only (/proc/stat); elsewhere every core counts as free. It leaves out cgroup CPU quotas.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

# Shorter windows say more about the scheduler's ticks than about the other processes.
MIN_WINDOW_S = 0.2
# Other processes' use (in cores) under which a core still counts as free: a few background tasks.
SLACK = 0.2


def _sample() -> tuple[float, float, float] | None:
    """(seconds, busy CPU seconds of the machine, CPU seconds of this process), or None where unknown."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.monotonic(), (user + nice + system + irq + softirq + steal) / tick, own.user + own.system


class FreeCores:
    """`free()`: the cores left to this process since the last call (or `mark()`), at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.cores = os.cpu_count() or 1  # /proc/stat counts every CPU of the machine
        self._mark = _sample()
        self._last = self.limit

    def mark(self) -> None:
        """Start a new window now (after this process's own heavy work, e.g. generating)."""
        self._mark = _sample()

    def free(self) -> int:
        now = _sample()
        before = self._mark
        if now is None or before is None or now[0] - before[0] < MIN_WINDOW_S:
            return self._last
        others = ((now[1] - before[1]) - (now[2] - before[2])) / (now[0] - before[0])
        self._mark = now
        self._last = max(1, min(self.limit, self.cores - max(0, math.ceil(others - SLACK))))
        return self._last
