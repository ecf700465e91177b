"""Start-up of the `kb` command itself: `kb --help` in fresh processes, this checkout against a git revision.

    python tests/bench/bench_help.py --baseline b54f1c4 [--runs 15]

Every command pays this before doing anything: Python starts, imports kb and its command-line package, builds
the Typer app. The baseline is the tree of --baseline exported from git into a temporary folder and imported in
place of this checkout (the editable install's package map pointed at it), so both variants run the same
interpreter and packages. They alternate, run after run, so that they share whatever else loads the machine.
Figures are medians and the best run, with the ratio this checkout / baseline (below 1: faster now).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_startup import ROOT, export  # noqa: E402

# Run `kb` with another tree: point the editable install's package map at it (packages the old tree does not
# have as folders, such as a module that later became a package, are left to the normal import system).
SHIM = """import os, runpy, sys
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
finder = next(m for n, m in list(sys.modules.items()) if n.startswith("__editable__") and hasattr(m, "MAPPING"))
moved = {k: v.replace(sys.argv[1], sys.argv[2], 1) for k, v in finder.MAPPING.items()}
finder.MAPPING.clear()
finder.MAPPING.update({k: v for k, v in moved.items() if os.path.isdir(v)})
sys.argv = ["kb", *sys.argv[3:]]
from kb.cli import main
main()
"""


# As a user's Python runs: compiled bytecode is written once and reused (some shells set this variable off).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, cwd="/", env=ENV)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = export(args.baseline, Path(tmp))
        # the same shim for both (for this checkout it maps nothing anew), so they differ only in kb's code
        variants = {"baseline": [sys.executable, "-c", SHIM, str(ROOT), str(old), "--help"],
                    "this checkout": [sys.executable, "-c", SHIM, str(ROOT), str(ROOT), "--help"]}
        for cmd in variants.values():
            once(cmd)  # warm the file cache and compiled bytecode
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, cmd in variants.items():
                times[name].append(once(cmd))
    base = statistics.median(times["baseline"])
    print(f"kb --help, {args.runs} fresh processes each (baseline: {args.baseline})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:14s} median {median:.3f} s  best {min(values):.3f} s  ratio {median / base:.2f}")


if __name__ == "__main__":
    main()
