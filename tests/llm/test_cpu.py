"""FreeCores: a local model gets the cores that other processes left free in the last window."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kb.llm import cpu


def _samples(monkeypatch, *samples):
    it = iter(samples)
    monkeypatch.setattr(cpu, "_sample", lambda: next(it))
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)


def test_other_processes_busy_cores_are_left_to_them(monkeypatch):
    # (seconds, busy CPU seconds of the machine, CPU seconds of this process)
    _samples(monkeypatch, (0.0, 0.0, 0.0),
             (1.0, 1.0, 1.0),  # this process alone kept one core busy: both cores are free to it
             (2.0, 2.0, 1.1),  # another process used 0.9 of a core
             (2.1, 2.1, 1.1),  # too short a window to tell: the last answer stands
             (3.1, 2.2, 1.2))  # quiet again (0.0 others)
    cores = cpu.FreeCores(limit=2)
    assert [cores.free(), cores.free(), cores.free(), cores.free()] == [2, 1, 1, 2]


def test_a_light_background_does_not_cost_a_core_and_the_limit_holds(monkeypatch):
    _samples(monkeypatch, (0.0, 0.0, 0.0), (1.0, 0.15, 0.0), (2.0, 0.15, 0.0))
    cores = cpu.FreeCores(limit=1)
    assert cores.free() == 1 and cores.free() == 1
    _samples(monkeypatch, (0.0, 0.0, 0.0), (1.0, 0.15, 0.0))
    assert cpu.FreeCores(limit=8).free() == 2


def test_unknown_machines_keep_every_thread(monkeypatch):
    monkeypatch.setattr(cpu, "_sample", lambda: None)
    assert cpu.FreeCores(limit=4).free() == 4


@pytest.mark.skipif(not sys.platform.startswith("linux") or (cpu.os.cpu_count() or 1) < 2,
                    reason="reads /proc/stat; needs two cores")
def test_a_busy_process_is_seen(monkeypatch):
    busy = subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "spinning"  # its loop starts now
        cores = cpu.FreeCores(limit=64)
        _wait_for_cpu_seconds(busy.pid, 0.5)  # the window holds half a core-second of its work, whatever the clock
        assert cores.free() <= cores.cores - 1
    finally:
        busy.kill()
        busy.wait()


def _wait_for_cpu_seconds(pid: int, seconds: float) -> None:
    """Until process `pid` has used `seconds` of CPU time (its /proc/<pid>/stat user + system ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + 60  # a safety net for a machine that never schedules it, not the condition
    while time.monotonic() < deadline:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / tick >= seconds:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} got no CPU time in 60 s")
