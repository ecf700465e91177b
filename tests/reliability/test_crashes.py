"""Crashes at the worst moments: the deterministic one a random kill rarely hits (after the SQLite
commit, before the FAISS file is written), and 20 SIGKILLs while documents change (slow). It extends
tests/core/test_crash.py, whose kills hit a corpus that is soon fully ingested, so most of them land in
runs with nothing left to do; here every run has updates to make."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.stores.local import LocalStore as Store


def _docs(folder, names):
    folder.mkdir()
    for name in names:
        (folder / f"{name}.md").write_text(f"# {name}\n\nThe {name} catalogue lists {len(name)} rare maps.\n")
    return folder


def test_killed_between_commit_and_faiss_write(settings, tmp_path, monkeypatch):
    with KnowledgeBase.open("c", settings=settings) as base:
        base.ingest(_docs(tmp_path / "a", ["atlas", "portolan"]))

    def die(self):
        raise SystemExit("killed after the commit")  # the process ends here: no FAISS file for this commit

    monkeypatch.setattr(Store, "save_dense_index", die)
    with KnowledgeBase.open("c", settings=settings) as base:
        with pytest.raises(SystemExit):
            base.ingest(_docs(tmp_path / "b", ["gazetteer"]))
        (base.folder / f"vectors-{base._store.generation}.faiss.tmp").write_bytes(b"half a file")
    monkeypatch.undo()

    with KnowledgeBase.open("c", settings=settings) as base:  # a reader: the newest commit, dense included
        hit = base.search("gazetteer catalogue rare maps", 1, mode="dense")[0]
        assert hit.path.endswith("gazetteer.md") and len(base.documents()) == 3
        report = base.ingest(tmp_path / "a", tmp_path / "b")  # the next writer: nothing to redo
        assert report.count("unchanged") == 3 and report.chunks_added == 0


def _write_round(folder, names, round_no: int) -> None:
    for name in names:
        paras = [f"Round {round_no}: the {name} ledger, entry {j}. " + " ".join(
            f"{name} item {k} was checked in round {round_no}." for k in range(10)) for j in range(8)]
        (folder / f"{name}.md").write_text(f"# {name}\n\n" + "\n\n".join(paras), encoding="utf-8")


def _keyword_chunks(folder) -> int:
    """The chunks the KB's keyword index holds (tantivy, the default engine: its documents less the generation
    tag; the FTS5 table is left empty)."""
    from kb.stores.local.keywords import TantivyKeywords

    searcher, _ = TantivyKeywords(folder).searcher()
    return searcher.num_docs - 1 if searcher is not None else 0


def _db_state(home):
    import sqlite3

    db = sqlite3.connect(home / "kbs" / "kills" / "meta.sqlite")
    docs = sorted(db.execute("SELECT path, content_hash FROM documents"))
    chunks = sorted(r[0] for r in db.execute("SELECT chunk_id FROM chunks"))
    db.close()
    return docs, chunks, _keyword_chunks(home / "kbs" / "kills")


def _wait_for_commits(home, folder, names, count, proc, timeout) -> None:
    """Poll the database (a WAL reader) until `count` of the changed files are committed."""
    import sqlite3
    import time

    from kb.ingest.parse import file_hash

    want = {str(folder / f"{n}.md"): file_hash(folder / f"{n}.md") for n in names}
    db = sqlite3.connect(f"file:{home / 'kbs' / 'kills' / 'meta.sqlite'}?mode=ro", uri=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            rows = db.execute("SELECT path, content_hash FROM documents").fetchall()
            if sum(want.get(p) == h for p, h in rows) >= count:
                return
            time.sleep(0.002)
    finally:
        db.close()


@pytest.mark.slow
def test_twenty_kills_while_documents_change(tmp_path):
    """Every round changes 5 of 30 files and SIGKILLs the ingest: at a random moment (startup, parsing,
    embedding), just after the run's first commit, or just after its last (the FAISS write); the suite
    counts where the kills landed. After each, the KB opens and searches; at the end a re-run equals a
    clean ingest of the final files."""
    import random
    import signal
    import subprocess
    import time

    from kbproc import kb_cmd, kb_env, note

    from kb.config import Settings
    from kb.ingest.parse import file_hash

    names = [f"shelf{i:02d}" for i in range(30)]
    folder = tmp_path / "docs"
    folder.mkdir()
    _write_round(folder, names, 0)
    home = tmp_path / "home"
    cmd, env = kb_cmd("ingest", str(folder), "--kb", "kills", "--quiet"), kb_env(home)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    rng = random.Random(8)
    landed = {"before the first commit": 0, "between commits": 0, "after the last commit": 0}
    for round_no in range(1, 22):
        changed = [names[(5 * round_no + j) % len(names)] for j in range(5)]
        _write_round(folder, changed, round_no)
        started = time.perf_counter()
        if round_no == 1:  # one unkilled update measures how long an update takes here
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
            span = time.perf_counter() - started
            continue
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_no % 3 == 2:  # a random moment: mostly startup, parsing and embedding
            time.sleep(rng.uniform(0.2, span * 1.1))
        else:  # right after this run's first commit, or right after its last one (during the FAISS write)
            _wait_for_commits(home, folder, changed, 1 if round_no % 3 == 0 else len(changed), proc, span * 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        docs = dict(_db_state(home)[0])
        done = sum(docs.get(str(folder / f"{n}.md")) == file_hash(folder / f"{n}.md") for n in changed)
        landed[["before the first commit", "between commits", "after the last commit"][(done > 0) + (done == 5)]] += 1
        with KnowledgeBase.open("kills", settings=Settings(home=home), create=False) as base:
            assert base.search("ledger entry checked", 3, mode="dense")  # opens, dense index usable
            assert len(base.documents()) == len(names)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    clean = tmp_path / "clean"
    subprocess.run(kb_cmd("ingest", str(folder), "--kb", "kills", "--quiet"), env=kb_env(clean), check=True,
                   capture_output=True, timeout=600)
    crashed_state, clean_state = _db_state(home), _db_state(clean)
    assert crashed_state == clean_state and crashed_state[2] == len(crashed_state[1])
    note("20 kills landed " + ", ".join(f"{v} {k}" for k, v in landed.items()) + f" (an update takes {span:.0f} s)")
