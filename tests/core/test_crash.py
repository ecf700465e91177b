"""A `kb ingest` killed with SIGKILL at any moment leaves a KB that opens, searches, and finishes on re-run
in exactly the state a clean ingest gives (same documents, same chunk ids, no duplicates)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from kb import KnowledgeBase
from kb.config import Settings

TOPICS = ["harbor", "orchard", "glacier", "violin", "compiler", "bakery", "railway", "comet", "archive", "garden"]


def _corpus(folder):
    folder.mkdir()
    for i, topic in enumerate(TOPICS * 2):
        paras = [f"Paragraph {j} about the {topic} number {i}: " + " ".join(
            f"{topic}{k} detail sentence {k} for document {i}." for k in range(12)) for j in range(6)]
        (folder / f"doc{i:02d}-{topic}.md").write_text(f"# {topic.title()} {i}\n\n" + "\n\n".join(paras))
    return folder


def _ingest_cmd(folder, home):
    env = {**os.environ, "KB_HOME": str(home), "KB_CONFIG": str(home / "none.yaml")}
    return [sys.executable, "-m", "kb.cli", "ingest", str(folder), "--kb", "crash", "--quiet"], env


def _keyword_chunks(folder) -> int:
    """The chunks the KB's keyword index holds (tantivy, the default engine: its documents less the generation
    tag; the FTS5 table is left empty)."""
    from kb.stores.local.keywords import TantivyKeywords

    searcher, _ = TantivyKeywords(folder).searcher()
    return searcher.num_docs - 1 if searcher is not None else 0


def _state(home):
    db = sqlite3.connect(home / "kbs" / "crash" / "meta.sqlite")
    docs = sorted(db.execute("SELECT path, content_hash FROM documents"))
    chunks = sorted(r[0] for r in db.execute("SELECT chunk_id FROM chunks"))
    db.close()
    return docs, chunks, _keyword_chunks(home / "kbs" / "crash")


def _check_opens_and_searches(home):
    settings = Settings(home=home)
    with KnowledgeBase.open("crash", settings=settings, create=False) as base:
        base.search("glacier detail", k=3)  # must not raise, whatever was committed


def _kill_and_resume(folder, home, delays):
    cmd, env = _ingest_cmd(folder, home)
    for delay in delays:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (home / "kbs" / "crash" / "manifest.json").exists():
            _check_opens_and_searches(home)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def _clean_state(folder, tmp_path):
    home = tmp_path / "clean"
    cmd, env = _ingest_cmd(folder, home)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return _state(home)


@pytest.mark.parametrize("seed", [1])  # 20 kills while files change: tests/reliability/test_crashes.py
def test_sigkill_during_ingest_then_rerun_matches_clean_ingest(tmp_path, seed):
    folder = _corpus(tmp_path / "docs")
    clean = _clean_state(folder, tmp_path)
    assert len(clean[0]) == len(TOPICS) * 2 and len(clean[1]) == clean[2] > 0
    rng = random.Random(seed)
    home = tmp_path / "crashed"
    _kill_and_resume(folder, home, [rng.uniform(2.0, 9.0) for _ in range(3)])
    assert _state(home) == clean

