"""Run the reliability suite and print its results as a Markdown table (for the README).

    python tests/reliability/report.py            # the default part (a few minutes)
    python tests/reliability/report.py --slow     # everything, as CI runs it (about 20 minutes)

Each row is one test: what it checks (its name), pass / fail / expected failure, its time, and the
figure it measured (peak memory, files reported...) when it records one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(slow: bool) -> tuple[list[dict], int]:
    with tempfile.TemporaryDirectory() as tmp:
        junit, notes = Path(tmp) / "junit.xml", Path(tmp) / "notes.jsonl"
        targets = ["tests/reliability"]
        marker = "slow or not slow" if slow else "not slow"
        done = subprocess.run([sys.executable, "-m", "pytest", *targets, "-m", marker, "-q", "-p", "no:cacheprovider",
                               f"--junitxml={junit}"], cwd=ROOT, env={**os.environ, "RELIABILITY_NOTES": str(notes)})
        measured: dict[str, list[str]] = {}
        if notes.exists():
            for line in notes.read_text(encoding="utf-8").splitlines():
                item = json.loads(line)
                measured.setdefault(item["test"].split("::")[-1], []).append(item["detail"])
        rows = []
        for case in ET.parse(junit).iter("testcase"):
            name = case.get("name")
            outcome = "pass"
            for tag, word in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "skipped")):
                child = case.find(tag)
                if child is not None:
                    outcome = word
                    if tag == "skipped" and "xfail" in (child.get("type", "") + child.get("message", "")):
                        outcome = "known failure (xfail)"
            rows.append({"file": case.get("classname", "").split(".")[-1], "name": name, "outcome": outcome,
                         "seconds": float(case.get("time", 0)), "measured": "; ".join(measured.get(name, []))})
        return rows, done.returncode


def table(rows: list[dict]) -> str:
    lines = ["| area | check | result | time | measured |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        area = r["file"].removeprefix("test_").replace("_", " ")
        check = r["name"].removeprefix("test_").replace("_", " ")
        lines.append(f"| {area} | {check} | {r['outcome']} | {r['seconds']:.0f} s | {r['measured']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also run the slow scenarios")
    args = parser.parse_args()
    rows, status = run(args.slow)
    print(table(rows))
    sys.exit(status)


if __name__ == "__main__":
    main()
