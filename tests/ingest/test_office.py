"""Old Office formats (.doc .wps .rtf .xls .ppt): LibreOffice converts them, the modern loaders read them.

The old files are made here: python-docx, openpyxl and python-pptx write a modern file holding an English
and a Chinese sentence found nowhere else, and LibreOffice itself saves it in the old format (.wps is a
copy of the .doc: WPS Writer files are Word binaries). Tests that need LibreOffice are skipped when it is
missing, and fail instead when CI_REQUIRE_OCR_TOOLS=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kb.errors import ParseError
from kb.ingest import office
from kb.ingest.loaders import load

MEMO = ("The night ferry to Orkney carries forty bicycles below deck.", "渡轮在黎明前驶入了雾中的港湾。")
SHEET = ("Copper kettles were restocked on the third shelf.", "仓库第三排货架上新补了铜水壶。")
DECK = ("Migrating cranes rest on the salt marsh every October.", "每年十月，迁徙的灰鹤在盐沼上歇脚。")
CASES = [("memo.doc", MEMO), ("memo.wps", MEMO), ("memo.rtf", MEMO), ("sheet.xls", SHEET), ("deck.ppt", DECK)]
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _unavailable(problem: str) -> None:
    """Skip, or fail where CI promises the tools are installed."""
    if os.environ.get("CI_REQUIRE_OCR_TOOLS") == "1":
        pytest.fail(f"CI_REQUIRE_OCR_TOOLS=1 but {problem}")
    pytest.skip(problem)


def _soffice() -> str:
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        _unavailable("LibreOffice (soffice) is not installed (apt install libreoffice-writer libreoffice-calc "
                     "libreoffice-impress)")
    return found


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """A HOME of the module's own, to show the user's LibreOffice settings are never touched."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(folder))
        yield folder


def _save_old(soffice: str, jobs: list[tuple[Path, str]], profiles: Path) -> None:
    """LibreOffice saves each (modern file, old format); all at once, each with a profile of its own."""
    runs = [subprocess.Popen([soffice, "--headless", "--norestore", "--nolockcheck",
                              f"-env:UserInstallation={(profiles / str(i)).as_uri()}", "--convert-to", fmt,
                              "--outdir", str(source.parent), str(source)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, (source, fmt) in enumerate(jobs)]
    for run in runs:
        run.wait(timeout=120)
    for source, fmt in jobs:
        if not source.with_suffix("." + fmt).is_file():
            _unavailable(f"LibreOffice cannot save .{fmt} here (libreoffice-writer / -calc / -impress missing?)")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """A folder with memo.doc/.wps/.rtf, sheet.xls and deck.ppt, written by LibreOffice."""
    import docx
    import openpyxl
    from pptx import Presentation

    soffice = _soffice()
    folder = tmp_path_factory.mktemp("legacy")
    d = docx.Document()
    d.add_heading("Harbour notes", level=1)
    for line in MEMO:
        d.add_paragraph(line)
    d.save(folder / "memo.docx")
    wb = openpyxl.Workbook()
    wb.active.append(["Note", "备注"])
    wb.active.append(list(SHEET))
    wb.save(folder / "sheet.xlsx")
    p = Presentation()
    slide = p.slides.add_slide(p.slide_layouts[1])
    slide.shapes.title.text = DECK[0]
    slide.placeholders[1].text = DECK[1]
    p.save(folder / "deck.pptx")

    jobs = [(folder / "memo.docx", "doc"), (folder / "memo.docx", "rtf"), (folder / "sheet.xlsx", "xls"),
            (folder / "deck.pptx", "ppt")]
    _save_old(soffice, jobs, tmp_path_factory.mktemp("fixture-profiles"))
    shutil.copy(folder / "memo.doc", folder / "memo.wps")
    for modern in ("memo.docx", "sheet.xlsx", "deck.pptx"):  # so nothing below reads an original by mistake
        (folder / modern).unlink()
    return folder


def _text(elements) -> str:
    return "\n".join([e.text for e in elements] + [c for e in elements for row in e.rows or () for c in row])


def _profile_root() -> Path:
    roots = list(Path(tempfile.gettempdir()).glob(f"kb-soffice-{os.getpid()}-*"))
    assert len(roots) == 1, roots
    return roots[0]


@pytest.mark.parametrize("name,sentences", CASES, ids=[c[0] for c in CASES])
def test_old_format_reads_both_sentences(legacy, name, sentences):
    text = _text(office.load_legacy(legacy / name, load))
    for sentence in sentences:
        assert sentence in text, f"{name}: {sentence!r} not in {text!r}"


def test_private_profile_is_used_and_reused(legacy, home, tmp_path):
    for _ in range(2):
        converted = office.convert(legacy / "memo.doc", ".docx", tmp_path)
        assert converted == tmp_path / "memo.docx"
    assert not (home / ".config" / "libreoffice").exists()
    profiles = list(_profile_root().glob("profile-*"))
    assert len(profiles) == 1 and (profiles[0] / "user" / "registrymodifications.xcu").is_file()


def test_two_processes_convert_at_once_each_with_its_own_profile(legacy, tmp_path):
    code = ("import sys, tempfile, os; from pathlib import Path; from kb.ingest.office import convert; "
            "convert(Path(sys.argv[1]), '.docx', Path(sys.argv[2])); "
            "print(*Path(tempfile.gettempdir()).glob(f'kb-soffice-{os.getpid()}-*'))")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(legacy / "memo.doc"), str(tmp_path / str(i))],
                             stdout=subprocess.PIPE, text=True) for i in range(2)]
    roots = [run.communicate(timeout=120)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert all((tmp_path / str(i) / "memo.docx").is_file() for i in range(2))
    assert roots[0] and roots[1] and roots[0] != roots[1]
    assert not any(Path(r).exists() for r in roots), "profiles left behind after exit"


def test_timeout_kills_libreoffice(legacy, tmp_path):
    with pytest.raises(ParseError, match=r"longer than 0\.2 s"):
        office.convert(legacy / "memo.doc", ".docx", tmp_path, timeout=0.2)
    root = str(_profile_root())
    deadline = time.monotonic() + 5
    while (left := _processes_mentioning(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"soffice still running: {left}"
    assert not (tmp_path / "memo.docx").exists()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_damaged_file_names_libreoffice(legacy, tmp_path):
    truncated = tmp_path / "cut.doc"
    truncated.write_bytes((legacy / "memo.doc").read_bytes()[:6000])
    with pytest.raises(ParseError, match="LibreOffice could not read it") as e:
        office.load_legacy(truncated, load)
    assert "not a real .doc" in e.value.reason and "\n" not in e.value.reason


def test_random_bytes_are_refused_not_read_as_text(tmp_path):
    # LibreOffice would import them as a plain-text page of garbage; kb refuses them before it runs.
    junk = tmp_path / "x.doc"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(ParseError, match="LibreOffice") as e:
        office.load_legacy(junk, load)
    assert "not a real .doc" in e.value.reason


@pytest.mark.parametrize("suffix,part", [(".doc", "writer"), (".wps", "writer"), (".rtf", "writer"),
                                         (".xls", "calc"), (".ppt", "impress")])
def test_missing_libreoffice_says_what_to_install(tmp_path, monkeypatch, suffix, part):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    old = tmp_path / f"old{suffix}"
    old.write_bytes(b"{\\rtf1 x}" if suffix == ".rtf" else OLE2 + bytes(504))
    with pytest.raises(ParseError) as e:
        office.load_legacy(old, load)
    assert f"apt install libreoffice-{part}" in e.value.reason
    assert "brew install --cask libreoffice" in e.value.reason
    assert f"save it as {office.LEGACY[suffix]}" in e.value.reason


def test_libreoffice_without_the_needed_part_says_which(tmp_path, monkeypatch):
    # Debian's libreoffice-core alone starts and then fails on every file; name the missing package instead.
    program = tmp_path / "program"
    program.mkdir()
    (program / "soffice.bin").touch()
    fake = program / "soffice"
    fake.write_text("#!/bin/sh\necho 'Error: source file could not be loaded' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake) if name == "soffice" else None)
    old = tmp_path / "sheet.xls"
    old.write_bytes(OLE2 + bytes(504))
    with pytest.raises(ParseError, match="without its Calc part.*apt install libreoffice-calc"):
        office.load_legacy(old, load)


def test_not_an_old_format_is_refused(tmp_path):
    with pytest.raises(ParseError, match="not an old Office format"):
        office.load_legacy(tmp_path / "a.docx", load)
