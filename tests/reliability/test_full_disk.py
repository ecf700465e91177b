"""A disk that fills up during an ingest: a clear one-line error, and the KB keeps its last commit.

As root with tmpfs available, the KB lives on a real 48 MB tmpfs that a filler file fills up; elsewhere,
SQLite's own page limit (PRAGMA max_page_count) makes the database report "database or disk is full"
through the same code path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from kbproc import ingest_json, note, run_kb

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import StorageError


def _corpus(folder: Path, name: str, n: int, sentences: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        body = " ".join(f"Sentence {k} about the {name} {i} and its timetable number {k * i}." for k in range(sentences))
        (folder / f"{name}{i}.md").write_text(f"# {name} {i}\n\n{body}\n", encoding="utf-8")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", f"kbtest-{uuid.uuid4().hex[:6]}", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(mount: Path, leave_kb: int) -> Path:
    st = os.statvfs(mount)
    filler = mount / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))
    return filler


@pytest.mark.slow
def test_disk_full_during_ingest_keeps_the_last_commit(small_disk, tmp_path):
    home = small_disk / "home"
    first = _corpus(tmp_path / "first", "harbour", 3, 5)
    status, report, _ = ingest_json(home, str(first), "--kb", "full")
    assert status == 0 and report["counts"]["added"] == 3
    filler = _fill(small_disk, 32)
    more = _corpus(tmp_path / "more", "ferry", 4, 100)

    done, _ = run_kb(home, "ingest", str(more), "--kb", "full", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    message = " ".join(done.stderr.split())
    assert "disk is full" in message and "meta.sqlite" in message and "last commit" in message
    note("exit 2, 'cannot write .../meta.sqlite (database or disk is full)'; last commit intact")

    with KnowledgeBase.open("full", settings=Settings(home=home), create=False) as base:
        paths = {d.path for d in base.documents()}
        assert {str(p) for p in first.iterdir()} <= paths  # the last commit is intact
        assert base.search("harbour 1 timetable", 1, mode="dense")[0].path.endswith("harbour1.md")
    filler.unlink()
    status, report, _ = ingest_json(home, str(more), "--kb", "full")  # with space again, the run completes
    assert status == 0 and report["counts"]["added"] + report["counts"]["unchanged"] == 4


def test_database_full_reports_a_storage_error(settings, tmp_path):
    """The same path without a mount: SQLite's page limit raises SQLITE_FULL inside the commit. Nothing committed
    is lost; a document that fitted in the free space left in the file's pages (16 KiB pages keep some) may have
    committed before the full one, whole."""
    with KnowledgeBase.open("pagelimit", settings=settings) as base:
        base.ingest(_corpus(tmp_path / "a", "orchard", 2, 5))
        before = sorted((d.path, d.content_hash) for d in base.documents())
        db = base._store._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StorageError, match="disk is full"):
            base.ingest(_corpus(tmp_path / "b", "quarry", 3, 60))
        after = base.documents()
        assert set(before) <= {(d.path, d.content_hash) for d in after} and len(after) < len(before) + 3
        assert all(d.chunks > 0 for d in after)  # a document row is committed with its chunks, never without
        assert base.search("orchard 1 timetable", 1)[0].path.endswith("orchard1.md")


def test_faiss_file_write_failure_is_a_clear_error(settings, tmp_path, monkeypatch):
    """The disk fills up after the SQLite commit, while the FAISS file is written (simulated at fsync)."""
    import errno

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with KnowledgeBase.open("nofaiss", settings=settings) as base:
        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(StorageError, match=r"vectors-\d+\.faiss.*No space left"):
            base.ingest(_corpus(tmp_path / "a", "meadow", 2, 5))
        monkeypatch.undo()
        assert not list(base.folder.glob("*.tmp"))
    with KnowledgeBase.open("nofaiss", settings=settings, create=False) as base:  # rebuilt from SQLite
        assert base.search("meadow 1 timetable", 1, mode="dense")[0].path.endswith("meadow1.md")
