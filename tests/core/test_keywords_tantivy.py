"""The local store with store.keyword_engine tantivy (the default): the same keyword results as FTS5 (English
stemmed, Chinese by jieba words, filters inside the engine, deletions); the KB keeps no FTS5 rows, and the term
counts and exported terms come out as FTS5 gave them; a crash between the SQLite commit and tantivy's leaves the
last commit searchable (the changed documents left out until the next ingest brings tantivy up to date); a long
ingest publishes as it goes; switching engines either way stays right; a KB built with fts5 is searched through
FTS5 (nothing written) until its next ingest builds the index with a progress line and lets FTS5's rows go; a
read-only folder is searched through a copy of the index; a missing tantivy package says what to install. The
shared store suite (tests/core/test_stores.py) runs ingest, prune, filters and SIGKILL on this engine too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import app
from kb.config import Settings
from kb.stores.local import keywords
from kb.stores.local.keywords import TantivyKeywords, fts5_search


def _folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor cools with heavy water.\n")
    (folder / "b.txt").write_text("Bravo team repaints the bridge every spring.\n")
    (folder / "规定.md").write_text("# 差旅\n\n员工出差时，一线城市的住宿标准为每晚六百元。\n")
    return folder


def _settings(settings, engine):
    return Settings(home=settings.home, store={"keyword_engine": engine})


def _paths(base, query, **kw):
    store = base._store
    ids = [cid for cid, _ in store.keyword_search(query, 10, **kw)]
    rows = store.chunks_by_id(ids)
    return [rows[i]["path"].rsplit("/", 1)[1] for i in ids]


def _served(base) -> bool:
    return base._store._keywords.current(base._store._db)


def _fts5_rows(base) -> int:
    return base._store._db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]


def test_a_tantivy_kb_keeps_no_fts5_rows_and_counts_and_exports_terms_as_fts5(settings, tmp_path):
    folder = _folder(tmp_path)
    tan = KnowledgeBase.open("t", settings=_settings(settings, "tantivy"))
    fts = KnowledgeBase.open("f", settings=_settings(settings, "fts5"))
    tan.ingest(folder)
    fts.ingest(folder)
    assert _fts5_rows(tan) == 0 and not keywords.fts5_kept(tan._store._db)
    assert _fts5_rows(fts) == fts._store.chunk_count() > 0
    terms = ["reactor", "bridge", "住宿", "标准", "cools", "nowhere"]
    counts = tan._store.term_document_frequency(terms)
    assert counts == fts._store.term_document_frequency(terms) and counts["reactor"] == 1 and counts["nowhere"] == 0
    exported = {r.info.path: (r.text, r.terms) for r in tan._store.export()}  # terms computed again from the text
    assert exported == {r.info.path: (r.text, r.terms) for r in fts._store.export()}
    assert any("住宿" in t for _, ts in exported.values() for t in ts)


def test_same_hits_as_fts5_stemmed_english_chinese_and_filters(settings, tmp_path):
    folder = _folder(tmp_path)
    fts = KnowledgeBase.open("f", settings=_settings(settings, "fts5"))
    fts.ingest(folder)
    tan = KnowledgeBase.open("t", settings=_settings(settings, "tantivy"))
    tan.ingest(folder)
    assert _served(tan)
    for query in ("reactor cooling", "who repaints bridges", "住宿标准", "出差住宿每晚多少钱", "heavy bridge"):
        assert _paths(tan, query) == _paths(fts, query), query
    assert _paths(tan, "cooling") == ["a.md"]  # "cools" and "cooling" stem alike
    hits = tan._store.keyword_search("reactor bridge", 10)
    assert len(hits) == 2 and all(score > 0 for _, score in hits) and hits == sorted(hits, key=lambda h: -h[1])
    doc_b = next(d.doc_id for d in tan.documents() if d.path.endswith("b.txt"))
    assert _paths(tan, "reactor bridge", doc_ids=[doc_b]) == ["b.txt"]
    assert _paths(tan, "reactor bridge", doc_ids=[]) == []
    assert [h.path.rsplit("/", 1)[1] for h in tan.search("bridge reactor", k=5, mode="bm25", file_types=["md"])] \
        == ["a.md"]
    assert 0 < tan.search("Who repaints the bridge?", k=1, mode="bm25")[0].score < 1

    found = []
    worker = threading.Thread(target=lambda: found.extend(tan._store.keyword_query(None)("reactor", 5)))
    worker.start()
    worker.join()
    assert [cid for cid, _ in found] == [cid for cid, _ in tan._store.keyword_search("reactor", 5)]


def test_updated_and_removed_documents_leave_tantivy(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("t", settings=_settings(settings, "tantivy"))
    base.ingest(folder)
    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor now cools with molten salt.\n")
    base.ingest(folder)
    base.remove(folder / "b.txt")
    assert _served(base)
    assert _paths(base, "heavy water") == [] and _paths(base, "molten salt") == ["a.md"]
    assert _paths(base, "bridge spring") == []


def test_crash_between_sqlite_and_tantivy_commits_recovers(settings, tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    tantivy_settings = _settings(settings, "tantivy")
    base = KnowledgeBase.open("t", settings=tantivy_settings)
    base.ingest(folder)
    (folder / "c.md").write_text("# Gamma\n\nThe gamma lighthouse keeper logs every ship.\n")
    (folder / "b.txt").unlink()

    def killed(self, db):
        raise KeyboardInterrupt("killed before tantivy's commit")

    monkeypatch.setattr(TantivyKeywords, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        base.ingest(folder, prune=True)  # SQLite has committed c.md and the removal of b.txt
    base.close()
    monkeypatch.undo()

    reopened = KnowledgeBase.open("t", settings=tantivy_settings)
    assert not _served(reopened) and not reopened._store.finished()
    # the last commit: the documents changed since tantivy's are left out of keyword search, dense finds them
    assert _paths(reopened, "lighthouse ship") == [] and _paths(reopened, "bridge spring") == []
    assert _paths(reopened, "reactor") == ["a.md"]
    assert reopened.search("gamma lighthouse keeper", k=1)[0].path.endswith("c.md")
    report = reopened.ingest(folder)
    assert not report.changed and _served(reopened)
    assert _paths(reopened, "lighthouse ship") == ["c.md"] and _paths(reopened, "bridge spring") == []


def test_switching_engines_rebuilds_what_is_behind(settings, tmp_path):
    folder = _folder(tmp_path)
    KnowledgeBase.open("k", settings=_settings(settings, "fts5")).ingest(folder)
    tan = KnowledgeBase.open("k", settings=_settings(settings, "tantivy"))
    assert not tan._store.finished()
    tan.ingest(folder)  # nothing changed: the keyword index is built from meta.sqlite
    assert _served(tan) and _paths(tan, "reactor") == ["a.md"]
    tan.close()

    (folder / "c.md").write_text("# Gamma\n\nThe gamma lighthouse keeper logs every ship.\n")
    fts = KnowledgeBase.open("k", settings=_settings(settings, "fts5"))
    assert not fts._store.finished() and _paths(fts, "reactor") == ["a.md"]  # tantivy's index, read
    events = []
    fts.ingest(folder, progress=events.append)  # FTS5's rows come back; tantivy falls behind
    chunks = fts._store.chunk_count()
    assert [(e.chunks, e.total) for e in events if e.kind == "keywords"] == [(0, chunks - 1), (chunks - 1, chunks - 1)]
    assert _fts5_rows(fts) == chunks and _paths(fts, "lighthouse") == ["c.md"] and fts._store.finished()
    fts.close()
    again = KnowledgeBase.open("k", settings=_settings(settings, "tantivy"))
    assert not _served(again) and _paths(again, "lighthouse") == ["c.md"]  # through FTS5 meanwhile
    again.ingest(folder)
    assert _served(again) and _paths(again, "lighthouse") == ["c.md"] and _fts5_rows(again) == 0


def test_a_long_ingest_publishes_the_keyword_index_as_it_goes(settings, tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("t", settings=_settings(settings, "tantivy"))
    base.ingest(folder)
    (folder / "c.md").write_text("# Gamma\n\nThe gamma lighthouse keeper logs every ship.\n")
    (folder / "d.md").write_text("# Delta\n\nThe delta ferry crosses at noon.\n")
    monkeypatch.setattr(keywords, "PUBLISH_SECONDS", 0.0)
    seen = []
    published = TantivyKeywords.publish

    def publish(self, db):  # what a reader sees after each publication, before the ingest ends
        published(self, db)
        seen.append(tuple(_paths(base, q) == [n] for q, n in (("lighthouse", "c.md"), ("ferry", "d.md"))))

    monkeypatch.setattr(TantivyKeywords, "publish", publish)
    base.ingest(folder)
    assert seen[:2] in ([(True, False), (True, True)], [(False, True), (True, True)])


def test_missing_tantivy_says_what_to_install(settings, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tantivy", None)
    with pytest.raises(ImportError, match=r"pip install 'tantivy>=0\.27,<0\.28'.*keyword_engine: fts5"):
        KnowledgeBase.open("t", settings=settings).ingest(_folder(tmp_path))


QUERIES = ("reactor cooling", "who repaints bridges", "住宿标准", "出差住宿每晚多少钱", "heavy bridge", "lighthouse ship")


def _fts5_ids(base, query):
    return [cid for cid, _ in fts5_search(base._store._db, query, 10, None)]


def _fts5_paths(base, query):
    ids = _fts5_ids(base, query)
    rows = base._store.chunks_by_id(ids)
    return [rows[i]["path"].rsplit("/", 1)[1] for i in ids]


def test_fts5_built_kb_is_searched_through_fts5_then_upgraded_by_the_next_ingest(settings, tmp_path):
    folder = _folder(tmp_path)
    KnowledgeBase.open("k", settings=_settings(settings, "fts5")).ingest(folder)
    kb_folder = settings.home_dir / "kbs" / "k"
    assert settings.store.keyword_engine == "tantivy"  # the default

    base = KnowledgeBase.open("k", settings=settings)
    assert base._store.keyword_engine == "tantivy" and not base._store.finished()
    for query in QUERIES:  # before any ingest: FTS5's own answers, and a reader writes no index
        assert [cid for cid, _ in base._store.keyword_search(query, 10)] == _fts5_ids(base, query), query
    assert _paths(base, "lighthouse ship") == [] and _paths(base, "reactor cooling") == ["a.md"]
    fts5_answers = {query: _fts5_paths(base, query) for query in QUERIES}
    assert not (kb_folder / keywords.FOLDER).exists()
    chunks_before = base._store.chunk_count()

    (folder / "c.md").write_text("# Gamma\n\nThe gamma lighthouse keeper logs every ship.\n")
    events = []
    report = base.ingest(folder, progress=events.append)
    assert report.count("added") == 1
    built = [(e.chunks, e.total) for e in events if e.kind == "keywords"]
    assert built[0] == (0, chunks_before) and built[-1] == (chunks_before, chunks_before)
    assert _served(base)
    searcher, _ = base._store._keywords.searcher()
    assert searcher.num_docs == base._store.chunk_count() + 1  # every chunk, and the generation tag
    assert _fts5_rows(base) == 0  # the rows FTS5 kept are let go once tantivy holds them
    for query in QUERIES:
        assert _paths(base, query) == (["c.md"] if query == "lighthouse ship" else fts5_answers[query]), query
    events.clear()
    base.ingest(folder, progress=events.append)  # up to date: nothing is built again
    assert not [e for e in events if e.kind == "keywords"]


def test_the_cli_says_it_builds_the_keyword_index(settings, tmp_path):
    folder = _folder(tmp_path)
    with KnowledgeBase.open("k", settings=_settings(settings, "fts5")) as base:
        base.ingest(folder)
        chunks = base._store.chunk_count()
    result = CliRunner().invoke(app, ["ingest", str(folder), "--kb", "k"])
    assert result.exit_code == 0, result.output
    assert f"building the keyword index of KB 'k' ({chunks} chunks)…" in result.output
    assert f"building the keyword index of KB 'k': done, {chunks} chunks" in result.output
    again = CliRunner().invoke(app, ["ingest", str(folder), "--kb", "k"])
    assert "keyword index" not in again.output


def test_a_first_build_killed_before_its_commit_leaves_fts5_serving(settings, tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    KnowledgeBase.open("k", settings=_settings(settings, "fts5")).ingest(folder)

    def killed(self, generation):
        raise KeyboardInterrupt("killed during the keyword index's first build")

    monkeypatch.setattr(TantivyKeywords, "commit", killed)
    base = KnowledgeBase.open("k", settings=settings)
    with pytest.raises(KeyboardInterrupt):
        base.ingest(folder)
    base.close()
    monkeypatch.undo()
    reopened = KnowledgeBase.open("k", settings=settings)
    assert not _served(reopened) and _paths(reopened, "reactor") == ["a.md"]
    reopened.ingest(folder)
    assert _served(reopened) and _paths(reopened, "reactor") == ["a.md"]


READER = """
import json, os, shutil, sys, tempfile
from kb import KnowledgeBase
from kb.config import Settings

def search(home):
    with KnowledgeBase.open("k", settings=Settings(home=home), create=False) as base:
        return [h.path.rsplit("/", 1)[1] for h in base.search("reactor bridge", k=5, mode="bm25")]

home = sys.argv[1]
if os.geteuid() == 0:  # root ignores permissions: search as 'nobody', after a search of a copy has imported
    warm = tempfile.mkdtemp()  # everything (the interpreter may live where 'nobody' cannot read)
    shutil.copytree(home, warm + "/home")
    search(warm + "/home")
    shutil.rmtree(warm)
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
print(json.dumps(search(home)))
"""


@pytest.mark.parametrize("engine", ["fts5", "tantivy"])
def test_a_read_only_kb_folder_still_answers_searches(settings, engine):
    """As another user (root runs the search as 'nobody'): nothing in the folder may be written, not even
    tantivy's lock file, so a KB of the tantivy engine (no FTS5 rows) is searched through a copy of its index."""
    root = Path(tempfile.mkdtemp(prefix="kb-ro-"))  # not under pytest's tmp folder, which only its owner may enter
    try:
        root.chmod(0o755)
        home = root / "home"
        KnowledgeBase.open("k", settings=Settings(home=home, store={"keyword_engine": engine})).ingest(_folder(root))
        for path in [home, *home.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        env = {**os.environ, "KB_HOME": str(home), "KB_CONFIG": str(root / "none.yaml")}
        run = subprocess.run([sys.executable, "-c", READER, str(home)], capture_output=True, text=True, env=env,
                             cwd=root, timeout=120)
        assert run.returncode == 0, run.stderr
        assert sorted(json.loads(run.stdout.splitlines()[-1])) == ["a.md", "b.txt"]
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(root, ignore_errors=True)
