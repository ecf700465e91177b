"""A `kb ingest` killed with SIGKILL (as the OOM killer does) mid-parse leaves no process behind: not its spawn
parse worker (which used to live on for good, about 720 MB, reparented to PID 1), not multiprocessing's resource
tracker, not a tesseract the worker runs, not LibreOffice's soffice.bin mid-conversion (a grandchild, in a
process group of its own). Processes are found by an environment marker (tests/processes.py), so reparented
ones count too. The next ingest then completes the KB. The mechanism is ingest/orphans.py; its quick tests are
tests/ingest/test_orphans.py."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from kbproc import kb_cmd, kb_env, note
from processes import Marker

from kb import KnowledgeBase
from kb.config import Settings
from kb.ingest.parse import PROCESS_MIN_FILES

WORKER = "--multiprocessing-fork"  # in the command line of a spawn child
GONE_WITHIN = 5.0  # seconds from the kill until no process of the ingest may be left


def _corpus(folder: Path, docs_folder: Path) -> Path:
    """Every format of tests/conftest.py plus enough small notes that ingest parses in its child process."""
    shutil.copytree(docs_folder, folder)
    for i in range(PROCESS_MIN_FILES):
        (folder / f"shelf{i:02d}.md").write_text(f"# Shelf {i}\n\nOn shelf {i} the cartographer keeps map {i} "
                                                 "of the northern coast.\n", encoding="utf-8")
    return folder


def _kill_when(folder: Path, home: Path, seen, what: str, settle: float = 0.0, **env: str) -> tuple[dict, float]:
    """Start `kb ingest folder`, SIGKILL it once a process of it matches `seen` (plus `settle` seconds), and wait
    for all its processes to go: (the processes running just before the kill, seconds from the kill to the last
    one gone)."""
    marker = Marker()
    proc = subprocess.Popen(kb_cmd("ingest", str(folder), "--kb", "k", "--quiet"),
                            env=kb_env(home, **marker.env, **env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert marker.wait_for(seen, timeout=300), f"the ingest ended before {what} ran (exit {proc.poll()})"
        time.sleep(settle)
        before = marker.processes()
    finally:
        proc.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        proc.wait()
    left, _ = marker.wait_gone(timeout=GONE_WITHIN)
    seconds = time.perf_counter() - killed
    assert not left, f"left running {seconds:.1f} s after the ingest was killed: {left}"
    print(f"{len(before)} processes before the kill ({what}); the last gone {seconds * 1000:.0f} ms after it")
    note(f"{what}: {len(before) - 1} processes of the ingest, the last gone {seconds * 1000:.0f} ms after the kill")
    return before, seconds


def _next_ingest_completes(folder: Path, home: Path, query: str, expect: str) -> None:
    done = subprocess.run(kb_cmd("ingest", str(folder), "--kb", "k", "--quiet"), env=kb_env(home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with KnowledgeBase.open("k", settings=Settings(home=home), create=False) as base:
        assert len(base.documents()) == sum(1 for p in folder.iterdir() if p.is_file())
        assert base.search(query, 1, mode="bm25")[0].path.endswith(expect)


@pytest.mark.slow
def test_killed_while_the_parse_worker_runs_it_goes_too(tmp_path, docs_folder):
    folder, home = _corpus(tmp_path / "docs", docs_folder), tmp_path / "home"
    before, _ = _kill_when(folder, home, lambda cmd: WORKER in cmd, "parse worker", settle=2.0)
    assert any(WORKER in cmd for cmd in before.values()), before
    _next_ingest_completes(folder, home, "cartographer shelf 7 map", "shelf07.md")


@pytest.mark.slow
def test_killed_while_tesseract_reads_a_scan_tesseract_goes_too(tmp_path, docs_folder):
    import scans

    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed (apt install tesseract-ocr)")
    folder, home = _corpus(tmp_path / "docs", docs_folder), tmp_path / "home"
    for i, line in enumerate(["Parking permits expire on the last day of March each year.",
                              "The cafeteria closes two hours early on public holidays."]):
        scans.render_page([line], size=(1200, 400), margin=50, seed=30 + i).save(folder / f"notice{i}.png")
    before, _ = _kill_when(folder, home, lambda cmd: cmd.startswith("tesseract "), "tesseract",
                           KB_INGEST__OCR="tesseract")
    assert any(WORKER in cmd for cmd in before.values()), before
    _next_ingest_completes(folder, home, "parking permits expire March", "notice0.png")


@pytest.mark.slow
def test_killed_while_libreoffice_converts_soffice_goes_too(tmp_path, docs_folder):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice (soffice) is not installed (apt install libreoffice-writer)")
    folder, home = _corpus(tmp_path / "docs", docs_folder), tmp_path / "home"
    _old_doc(soffice, folder / "memo.doc", tmp_path / "profile")
    before, _ = _kill_when(folder, home, lambda cmd: "soffice.bin" in cmd, "LibreOffice")
    assert any(WORKER in cmd for cmd in before.values()), before
    _next_ingest_completes(folder, home, "night ferry Orkney bicycles", "memo.doc")


def _old_doc(soffice: str, path: Path, profile: Path) -> None:
    """A Word 97 .doc, written by LibreOffice from a .docx that python-docx makes."""
    import docx

    modern = profile.parent / f"{path.stem}.docx"
    d = docx.Document()
    d.add_heading("Harbour notes", level=1)
    d.add_paragraph("The night ferry to Orkney carries forty bicycles below deck.")
    d.save(modern)
    subprocess.run([soffice, "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
                    "--convert-to", "doc", "--outdir", str(path.parent), str(modern)],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if not path.is_file():
        pytest.skip("LibreOffice cannot write .doc here (libreoffice-writer missing?)")
