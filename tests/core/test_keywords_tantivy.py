"""The local store with store.keyword_engine tantivy: the same keyword results as FTS5 (English stemmed, Chinese by
jieba words, filters inside the engine, deletions), a crash between the SQLite commit and tantivy's leaves the
commit searchable and the next ingest brings tantivy up to date, switching engines either way stays right, and a
missing tantivy package names the extra. The shared store suite (tests/core/test_stores.py) runs ingest, prune,
filters and SIGKILL on this engine too."""

from __future__ import annotations

import sys
import threading

import pytest

from kb import KnowledgeBase
from kb.config import Settings
from kb.stores.local.keywords import TantivyKeywords

pytest.importorskip("tantivy")


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
    assert _paths(reopened, "lighthouse ship") == ["c.md"]  # the last commit, through FTS5 meanwhile
    assert _paths(reopened, "bridge spring") == []
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
    KnowledgeBase.open("k", settings=_settings(settings, "fts5")).ingest(folder)  # tantivy falls behind
    again = KnowledgeBase.open("k", settings=_settings(settings, "tantivy"))
    assert not _served(again) and _paths(again, "lighthouse") == ["c.md"]
    again.ingest(folder)
    assert _served(again) and _paths(again, "lighthouse") == ["c.md"]


def test_missing_tantivy_names_the_extra(settings, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tantivy", None)
    with pytest.raises(ImportError, match=r"kb\[tantivy\]"):
        KnowledgeBase.open("t", settings=_settings(settings, "tantivy")).ingest(_folder(tmp_path))
