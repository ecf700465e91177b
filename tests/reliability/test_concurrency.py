"""Two writers and a reader on one KB at once: the second writer fails clearly or waits, the reader
never errors and never sees anything but a committed state, and the result equals a clean ingest."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kbproc import kb_cmd, kb_env, note, run_kb

READER = r"""
import json, sys, time
from kb import KnowledgeBase
from kb.config import Settings
home, stop = sys.argv[1], sys.argv[2]
from pathlib import Path
seen = []
settings = Settings(home=home, llm={"backend": "scripted", "model": ""})  # the scripted model echoes
with KnowledgeBase.open("busy", settings=settings, create=False) as base:
    while not Path(stop).exists():
        docs = len(base.documents())
        hits = base.search("lantern festival schedule", 3)
        assert all(h.path.endswith(".md") and h.text for h in hits)
        answer = base.ask("When is the lantern festival schedule?")
        assert answer.passages and all(p.path.endswith(".md") for p in answer.passages)
        seen.append(docs)
        time.sleep(0.05)
    seen.append(len(base.documents()))
print(json.dumps(seen))
"""


def _corpus(folder: Path, name: str, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        body = " ".join(f"The {name} {i} lantern festival schedule lists event {k}." for k in range(40))
        (folder / f"{name}{i:02d}.md").write_text(f"# {name} {i}\n\n{body}\n", encoding="utf-8")
    return folder


def _state(home: Path) -> tuple[list, list]:
    db = sqlite3.connect(home / "kbs" / "busy" / "meta.sqlite")
    docs = sorted(db.execute("SELECT path, content_hash FROM documents"))
    chunks = sorted(r[0] for r in db.execute("SELECT chunk_id FROM chunks"))
    db.close()
    return docs, chunks


@pytest.mark.slow
def test_second_writer_fails_clearly_or_waits_and_a_reader_sees_only_commits(tmp_path):
    home = tmp_path / "home"
    seed = _corpus(tmp_path / "seed", "seed", 2)
    assert run_kb(home, "ingest", str(seed), "--kb", "busy", "--quiet")[0].returncode == 0
    big, small = _corpus(tmp_path / "big", "river", 30), _corpus(tmp_path / "small", "hill", 3)

    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(home), str(stop)], env=kb_env(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.Popen(kb_cmd("ingest", str(big), "--kb", "busy", "--quiet"), env=kb_env(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = home / "kbs" / "busy.lock"
    deadline = time.time() + 120
    while time.time() < deadline and writer.poll() is None:  # wait until the first writer holds the lock
        probe = subprocess.run(["flock", "-n", str(lock), "true"], capture_output=True)
        if probe.returncode != 0:
            break
        time.sleep(0.2)
    refused, _ = run_kb(home, "ingest", str(small), "--kb", "busy")
    waited, _ = run_kb(home, "ingest", str(small), "--kb", "busy", "--wait", "600", "--quiet")
    first_done = writer.wait(timeout=600)
    stop.touch()
    out, err = reader.communicate(timeout=300)

    assert first_done == 0, writer.stderr.read()
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "being written by another process" in message and "--wait" in message
    assert "Traceback" not in refused.stderr
    assert waited.returncode == 0 and "3 added" in waited.stdout
    assert reader.returncode == 0, err[-3000:]
    seen = json.loads(out)
    assert seen == sorted(seen) and seen[0] >= 2 and seen[-1] == 2 + 30 + 3  # only ever forward, to the end
    note(f"reader: {len(seen)} searches + asks, document counts {seen[0]}..{seen[-1]}, no errors")

    clean = tmp_path / "clean"
    for folder in (seed, big, small):
        assert run_kb(clean, "ingest", str(folder), "--kb", "busy", "--quiet")[0].returncode == 0
    assert _state(home) == _state(clean)
