"""Re-ingest is incremental: unchanged files cost nothing, changed files replace their old text."""

from __future__ import annotations

import os
import shutil

from kb import KnowledgeBase


def _folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor cools with heavy water.\n")
    (folder / "b.txt").write_text("Bravo team repaints the bridge every spring.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "c.md").write_text("# Charlie\n\nCharlie keeps the spare keys in the blue cabinet.\n")
    return folder


def _state(base):
    return sorted((d.path, d.content_hash, d.chunks) for d in base.documents()), base.stats()["chunks"]


def test_reingest_unchanged_adds_nothing(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("inc", settings=settings)
    first = base.ingest(folder)
    assert first.count("added") == 3
    before = _state(base)
    again = base.ingest(folder)
    assert again.count("unchanged") == 3 and again.chunks_added == 0 and not again.changed
    assert _state(base) == before


def test_touched_but_identical_file_is_not_reembedded(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("touch", settings=settings)
    base.ingest(folder)
    st = os.stat(folder / "a.md")
    os.utime(folder / "a.md", (st.st_atime + 100, st.st_mtime + 100))
    report = base.ingest(folder)
    assert report.count("unchanged") == 3 and report.chunks_added == 0


def test_changed_file_replaces_old_text(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("chg", settings=settings)
    base.ingest(folder)
    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor now cools with molten salt.\n")
    report = base.ingest(folder)
    assert report.count("updated") == 1 and report.count("unchanged") == 2
    texts = [h.text for h in base.search("reactor cooling", k=5)]
    assert any("molten salt" in t for t in texts)
    assert not any("heavy water" in t for t in texts)
    assert base.search("heavy water", k=5, mode="bm25") == [] or all(
        "heavy water" not in h.text for h in base.search("heavy water", k=5, mode="bm25"))
    assert len(base.documents()) == 3


def test_deleted_file_removed_only_with_prune(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("prune", settings=settings)
    base.ingest(folder)
    shutil.rmtree(folder / "sub")
    kept = base.ingest(folder)
    assert len(kept.missing) == 1 and len(base.documents()) == 3
    pruned = base.ingest(folder, prune=True)
    assert pruned.count("removed") == 1
    assert [d.path.rsplit("/", 1)[-1] for d in base.documents()] == ["a.md", "b.txt"]
    assert all("spare keys" not in h.text for h in base.search("spare keys cabinet", k=5))


def test_remove_document_by_path(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("rm", settings=settings)
    base.ingest(folder)
    removed = base.remove(folder / "b.txt")
    assert [d.path for d in removed] == [str((folder / "b.txt").resolve())]
    assert all(not h.path.endswith("b.txt") for h in base.search("bridge repainting", k=5))


def test_corrupt_file_is_reported_and_the_rest_is_searchable(settings, tmp_path):
    folder = _folder(tmp_path)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nthis is not a pdf")
    base = KnowledgeBase.open("corrupt", settings=settings)
    report = base.ingest(folder)
    assert [f.path.rsplit("/", 1)[-1] for f in report.failed] == ["broken.pdf"]
    assert "PDF" in report.failed[0].reason
    assert report.count("added") == 3
    assert base.search("spare keys", k=1)[0].path.endswith("c.md")


def test_a_file_that_breaks_later_keeps_its_old_version(settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("keep", settings=settings)
    base.ingest(folder)
    (folder / "b.txt").write_bytes(b"\x00\x01\x02binary now" * 100)
    report = base.ingest(folder)
    assert [f.path.rsplit("/", 1)[-1] for f in report.failed] == ["b.txt"]
    assert base.search("bridge repainting spring", k=1)[0].path.endswith("b.txt")


def test_an_open_kb_follows_a_rebuild_by_another_writer(settings, tmp_path):
    # A long-running reader (the HTTP server, the web app) keeps its KnowledgeBase open while another
    # process rebuilds the KB: its next search must come from the new index, not the replaced one.
    folder = _folder(tmp_path)
    reader = KnowledgeBase.open("inc", settings=settings)
    reader.ingest(folder)
    assert reader.search("spare keys cabinet", k=1)[0].path.endswith("c.md")
    (folder / "sub" / "c.md").unlink()
    (folder / "d.md").write_text("# Delta\n\nDelta squad stores the spare keys in a red locker.\n")
    with KnowledgeBase.open("inc", settings=settings) as writer:
        writer.ingest(folder, rebuild=True)
    hits = reader.search("spare keys", k=5)
    assert hits[0].path.endswith("d.md") and not any(h.path.endswith("c.md") for h in hits)
    assert {os.path.basename(d.path) for d in reader.documents()} == {"a.md", "b.txt", "d.md"}
    reader.close()


def test_file_limits_come_from_the_settings_and_name_them(tmp_path, settings, monkeypatch):
    folder = _folder(tmp_path)
    (folder / "long.txt").write_text("The lighthouse keeper logs every passing ship. " * 40)  # ~1,900 characters
    (folder / "big.md").write_text("# Big\n\n" + "Ballast water is pumped at dawn. " * 4000)  # ~130 KB
    strict = settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"max_text_chars": 1000, "max_file_mb": 0.1})})
    for child_process in (False, True):  # small jobs parse in this process, large ones in a child
        monkeypatch.setattr("kb.ingest.parse.PROCESS_MIN_FILES", 1 if child_process else 10_000)
        name = f"limits-{int(child_process)}"
        with KnowledgeBase.open(name, settings=strict) as base:
            report = base.ingest(folder)
        reasons = {os.path.basename(f.path): f.reason for f in report.files if f.status == "failed"}
        assert "ingest.max_text_chars" in reasons["long.txt"] and "1,000" in reasons["long.txt"]
        assert "ingest.max_file_mb" in reasons["big.md"] and "0.1 MB" in reasons["big.md"]
        assert report.count("added") == 3  # the others are indexed
