"""Crashes at the worst moments. The 20 random SIGKILLs of `kb ingest` live in tests/core/test_crash.py
(`test_twenty_random_kills`, marked slow, run by CI's slow step); this file adds the deterministic
moment a random kill rarely hits: after the SQLite commit, before the FAISS file is written."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.store import Store


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
