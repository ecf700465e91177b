"""A folder of damaged, hostile, huge and oddly named files, ingested into a KB that already holds
documents: every file is either searchable afterwards or reported with its reason, the run finishes,
memory stays under a stated bound, and nothing that was in the KB before is lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import bad_inputs as bad
import pytest
from kbproc import ingest_json, kb_env, note

from kb import KnowledgeBase
from kb.config import Settings

# Peak resident memory of `kb ingest` and its parse worker together over the whole bad folder. The
# embedder (torch + MiniLM) and unstructured alone take ~0.9 GB; the 1 GB zip bomb, the 20 MB line and
# the 10,000-deep HTML must not add more than a few hundred MB on top.
MEMORY_BOUND = 2 << 30

PRECIOUS = {
    "keep/orchard.md": ("# Orchard\n\nThe pear orchard is pruned in February by the two gardeners.\n",
                        "pear orchard pruned February"),
    "keep/bridge.txt": ("The suspension bridge cables are inspected by climbers every spring.\n",
                        "suspension bridge cables inspected"),
    "keep/茶.txt": ("龙井茶的采摘在清明前后最为讲究。\n", "龙井茶采摘清明"),
}


def _state(home: Path, kb: str) -> tuple[list, list]:
    db = sqlite3.connect(home / "kbs" / kb / "meta.sqlite")
    docs = sorted(db.execute("SELECT path, content_hash FROM documents"))
    chunks = sorted(db.execute("SELECT chunk_id, text FROM chunks"))
    db.close()
    return docs, chunks


def _top_paths(base: KnowledgeBase, query: str, k: int = 3) -> list[str]:
    return [h.path for h in base.search(query, k)]


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    home = root / "kbhome"
    for rel, (text, _) in PRECIOUS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    status, _, _ = ingest_json(home, str(root / "keep"), "--kb", "bad")
    assert status == 0
    before = _state(home, "bad")

    folder = root / "incoming"
    folder.mkdir()
    expects = []
    for make in (bad.pdfs, bad.empty_and_binary, bad.encodings, bad.nested_html, bad.docx_zip_bomb,
                 bad.symlink_loops, bad.odd_names, bad.single_long_line, bad.images):
        expects += make(folder)
    expects += bad.single_long_line(folder, 0.1, "long-line-ok.txt")
    status, report, peak = ingest_json(home, str(folder), "--kb", "bad")
    base = KnowledgeBase.open("bad", settings=Settings(home=home), create=False)
    yield {"home": home, "before": before, "status": status, "report": report, "peak": peak,
           "expects": expects, "base": base}
    base.close()


@pytest.mark.slow
def test_every_bad_file_is_searchable_or_reported_with_its_reason(bad_run):
    files = {f["path"]: f for f in bad_run["report"]["files"]}
    wrong = []
    for e in bad_run["expects"]:
        got = files.get(str(e.path))
        if got is None:
            wrong.append(f"{e.path.name!r}: not in the report at all")
        elif e.reason is not None:
            if got["status"] != "failed" or e.reason.lower() not in got["reason"].lower():
                wrong.append(f"{e.path.name!r}: expected failed ({e.reason}), got {got['status']} {got['reason']!r}")
        elif got["status"] != "added":
            wrong.append(f"{e.path.name!r}: expected added, got {got['status']} {got['reason']!r}")
        elif str(e.path) not in _top_paths(bad_run["base"], e.marker):
            wrong.append(f"{e.path.name!r}: ingested, but a search for {e.marker!r} does not find it")
    assert not wrong, "\n".join(wrong)
    assert bad_run["status"] == 1  # some files failed, and the exit status says so
    counts = bad_run["report"]["counts"]
    note(f"{len(bad_run['expects'])} files: {counts['added']} ingested and searchable, {counts['failed']} reported")


@pytest.mark.slow
def test_nothing_already_in_the_kb_is_lost(bad_run):
    docs, chunks = _state(bad_run["home"], "bad")
    before_docs, before_chunks = bad_run["before"]
    assert set(before_docs) <= set(docs) and set(before_chunks) <= set(chunks)
    for rel, (_, query) in PRECIOUS.items():
        assert _top_paths(bad_run["base"], query, 1)[0].endswith(rel)


@pytest.mark.slow
def test_memory_stays_bounded(bad_run):
    peak = bad_run["peak"]
    note(f"peak RSS {peak / 2**20:,.0f} MB (bound {MEMORY_BOUND >> 20:,} MB)")
    assert 0 < peak < MEMORY_BOUND


@pytest.mark.slow
def test_a_300_page_scan_is_read_page_by_page_in_bounded_memory(settings, tmp_path):
    """Every page OCR'd into chunks that carry its page number; memory stays under the bound."""
    folder = tmp_path / "scan"
    folder.mkdir()
    (folder / "small.txt").write_text("The lighthouse lamp is cleaned every Sunday.", encoding="utf-8")
    assert ingest_json(settings.home, str(folder), "--kb", "scan")[0] == 0  # the embedder is built (once) here
    lines = bad.long_scan(folder / "ledger.pdf", 300)
    status, report, peak = ingest_json(settings.home, str(folder), "--kb", "scan", timeout=2400)
    files = {os.path.basename(f["path"]): f for f in report["files"]}
    assert status == 0 and files["ledger.pdf"]["status"] == "added", report
    assert files["ledger.pdf"]["ocr_pages"] == 300 == report["ocr"]["pages"]
    db = sqlite3.connect(settings.home / "kbs" / "scan" / "meta.sqlite")
    pages: dict[int, str] = {}
    for page, text in db.execute("SELECT page, text FROM chunks WHERE page IS NOT NULL"):
        pages[page] = pages.get(page, "") + "".join(text.split())
    db.close()
    assert sorted(pages) == [n for n, _ in lines]
    # Each page says "Ledger page N: crate QX000N ..."; OCR may misread a letter of the code, not the page.
    right = sum(f"page{n}:" in pages[n] for n, _ in lines)
    assert right >= 0.95 * len(lines), f"{right}/300 pages read with their own page number"
    rate = report["ocr"]["pages"] / report["ocr"]["seconds"]
    note(f"300 scanned pages in {report['seconds']:.0f} s ({rate:.2f} pages/s in OCR; {right}/300 read "
         f"with their page number), peak RSS {peak / 2**20:,.0f} MB (bound {MEMORY_BOUND >> 20:,} MB)")
    assert peak < MEMORY_BOUND


@pytest.mark.slow
def test_huge_text_file_is_refused_quickly(settings, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    expect = bad.huge_text(folder, 200)[0]
    (folder / "small.txt").write_text("The sextant was calibrated at noon.", encoding="utf-8")
    status, report, peak = ingest_json(settings.home, str(folder), "--kb", "huge", timeout=300)
    files = {f["path"]: f for f in report["files"]}
    assert files[str(expect.path)]["status"] == "failed" and "too large" in files[str(expect.path)]["reason"]
    assert files[str(folder / "small.txt")]["status"] == "added" and status == 1
    note(f"200 MB file refused in {report['seconds']:.1f} s, peak RSS {peak / 2**20:,.0f} MB")
    assert peak < MEMORY_BOUND


def test_bad_files_in_process(settings, tmp_path):
    """The quick version (default run): the same files minus the multi-MB ones, through the Python API."""
    keep, folder = tmp_path / "keep", tmp_path / "incoming"
    keep.mkdir()
    folder.mkdir()
    (keep / "orchard.md").write_text(PRECIOUS["keep/orchard.md"][0], encoding="utf-8")
    expects = []
    for make in (bad.pdfs, bad.empty_and_binary, bad.encodings, bad.nested_html, bad.symlink_loops, bad.odd_names):
        expects += make(folder)
    expects += bad.docx_zip_bomb(folder, 300)
    expects += bad.single_long_line(folder, 6)
    with KnowledgeBase.open("quick", settings=settings) as base:
        base.ingest(keep)
        report = base.ingest(folder)
        files = {f.path: f for f in report.files}
        wrong = []
        for e in expects:
            got = files.get(str(e.path))
            if got is None:
                wrong.append(f"{e.path.name!r}: not in the report")
            elif e.reason is not None and (got.status != "failed" or e.reason.lower() not in got.reason.lower()):
                wrong.append(f"{e.path.name!r}: expected failed ({e.reason}), got {got.status} {got.reason!r}")
            elif e.reason is None and (got.status != "added" or str(e.path) not in _top_paths(base, e.marker)):
                wrong.append(f"{e.path.name!r}: expected added and found by {e.marker!r}, got {got.status}")
        assert not wrong, "\n".join(wrong)
        assert _top_paths(base, "pear orchard pruned February", 1) == [str(keep / "orchard.md")]
    note(f"{len(expects)} files: {report.count('added')} searchable, {report.count('failed')} reported")


def _world_writable_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="kb-unreadable-"))
    path.chmod(0o777)
    return path


def test_unreadable_file_and_folder_are_reported(tmp_path):
    """chmod 000 stops only a non-root user: as root, `kb ingest` runs as 'nobody' (uid 65534)."""
    as_root = os.geteuid() == 0
    work = _world_writable_dir() if as_root else tmp_path
    try:
        folder = work / "docs"
        folder.mkdir()
        (folder / "open.txt").write_text("The open ledger lists every lantern.", encoding="utf-8")
        expects = bad.unreadable(folder)
        home = work / "kbhome"
        if as_root:
            warm = work / "warm"
            warm.mkdir()
            (warm / "w.txt").write_text("Warm-up text.", encoding="utf-8")
            args = ["ingest", str(folder), "--kb", "perm", "--json", "--quiet"]
            done = subprocess.run([sys.executable, str(Path(__file__).with_name("as_user.py")), "65534",
                                   str(warm), "--", *args], env=kb_env(home, HOME=str(work)), cwd=work,
                                  capture_output=True, text=True, timeout=600)
            status, report = done.returncode, json.loads(done.stdout or "null") or pytest.fail(done.stderr)
        else:
            status, report, _ = ingest_json(home, str(folder), "--kb", "perm")
        files = {f["path"]: f for f in report["files"]}
        for e in expects:
            assert files[str(e.path)]["status"] == "failed", files
            assert e.reason in files[str(e.path)]["reason"]
        assert files[str(folder / "open.txt")]["status"] == "added" and status == 1
        note("as uid 65534 (tests run as root)" if as_root else "as the current user")
    finally:
        for p in (work / "docs" / "closed", work / "docs" / "locked.txt"):
            if p.exists():
                p.chmod(0o700)
        if as_root:
            shutil.rmtree(work, ignore_errors=True)
