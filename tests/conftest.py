"""Shared fixtures: an isolated KB_HOME, and a folder with one real document of every supported format.

Every document is generated here with the library that writes that format (python-docx, python-pptx,
openpyxl, reportlab, pandoc, the email package), and each holds a sentence found nowhere else, so a
search can tell whether the right file (and page) came back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from kb.config import Settings

MODELS_ENV = "KB_EMBEDDING__CACHE_DIR"


def pytest_configure(config) -> None:
    """One models folder for the whole run, set before collection: kb builds its default embedder there once
    (~10 s) instead of once per test KB_HOME, and so do apps that test modules build at import time.
    Subprocesses (`kb` commands) inherit the variable. An outside value is kept (a warm cache)."""
    if MODELS_ENV not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="kb-test-models-"))
        os.environ[MODELS_ENV] = str(folder)
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    return Path(os.environ[MODELS_ENV])


@pytest.fixture
def settings(tmp_path, monkeypatch, shared_models_dir) -> Settings:
    """Settings with a private KB_HOME and no config file or KB_* variables from the outside (but the
    session's shared models folder)."""
    for key in list(os.environ):
        if key.startswith("KB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv(MODELS_ENV, str(shared_models_dir))
    home = tmp_path / "kbhome"
    monkeypatch.setenv("KB_HOME", str(home))
    monkeypatch.setenv("KB_CONFIG", str(tmp_path / "no-config.yaml"))
    return Settings(home=home)


def _pdf(path: Path) -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path))
    pages = [
        ("Helvetica", "The warehouse inventory audit counts every pallet and forklift twice a year."),
        ("STSong-Light", "员工出差时，一线城市的住宿标准为每晚六百元，超出部分自理。"),
        ("Helvetica", "The quarterly penguin census counted 412 birds on the northern beach."),
    ]
    for font, line in pages:
        c.setFont(font, 12)
        c.drawString(60, 750, line)
        c.showPage()
    c.save()


def _docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Maintenance notes", level=1)
    d.add_paragraph("The aquarium pump must be descaled every ninety days with citric acid.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Part", "Interval"
    table.cell(1, 0).text, table.cell(1, 1).text = "Filter sponge", "30 days"
    d.save(path)


def _pptx(path: Path) -> None:
    from pptx import Presentation

    p = Presentation()
    s1 = p.slides.add_slide(p.slide_layouts[1])
    s1.shapes.title.text = "Field station overview"
    s1.placeholders[1].text = "Three stations on the island."
    s2 = p.slides.add_slide(p.slide_layouts[1])
    s2.shapes.title.text = "Instruments"
    s2.placeholders[1].text = "Volcano monitoring sensors report tremors every hour."
    p.save(path)


def _xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Observatory"
    for row in (["Item", "Cost"], ["Telescope lens", 4200], ["Dome motor", 1800]):
        ws.append(row)
    wb.save(path)


def _pandoc(path: Path, markdown: str, fmt: str) -> None:
    import pypandoc

    pypandoc.convert_text(markdown, fmt, format="md", outputfile=str(path),
                          extra_args=["--metadata", "title=Test"])


def _eml(path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "ana@example.org"
    msg["To"] = "team@example.org"
    msg["Subject"] = "Team outing"
    msg.set_content("Hi all, I booked the kayak rental for the team outing on Saturday morning.")
    path.write_bytes(msg.as_bytes())


def build_documents(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _pdf(folder / "report.pdf")
    _docx(folder / "notes.docx")
    _pptx(folder / "slides.pptx")
    _xlsx(folder / "budget.xlsx")
    (folder / "page.html").write_text(
        "<html><head><meta charset='utf-8'><title>Coast</title></head><body><h1>Coast</h1>"
        "<p>The lighthouse keeper logs every ship sighting in a leather ledger.</p></body></html>", encoding="utf-8")
    (folder / "guide.md").write_text(
        "# Beekeeping\n\n## Opening the hive\n\nA little smoke calms the bees before the hive is opened.\n",
        encoding="utf-8")
    (folder / "plain.txt").write_text("Glacier retreat is measured each summer with bamboo stakes.\n",
                                      encoding="utf-8")
    (folder / "gbk.txt").write_bytes("长城的烽火台用来传递军情，白天放烟，夜里点火。".encode("gbk"))
    (folder / "gb18030.txt").write_bytes("敦煌莫高窟的壁画修复工作已经持续了几十年。".encode("gb18030"))
    (folder / "big5.txt").write_bytes("阿里山的茶園在清晨常常被雲霧籠罩。".encode("big5"))
    (folder / "utf16.txt").write_bytes("哈尼族的梯田依靠山泉灌溉，层层叠叠。".encode("utf-16"))
    (folder / "bom.txt").write_bytes("黄河上的古渡口曾经是商旅往来的要道。".encode("utf-8-sig"))
    (folder / "table.csv").write_text(
        "planet,feature,detail\nSaturn,rings,ring particles range from dust to house-sized boulders\n"
        "Jupiter,storm,the great red spot is shrinking\n", encoding="utf-8")
    (folder / "record.json").write_text(
        '{"project": {"codename": "Bluefin", "budget_eur": 1200, "owner": "marine team"}}', encoding="utf-8")
    _eml(folder / "mail.eml")
    _pandoc(folder / "book.epub", "# Paper folding\n\nFolding an origami crane takes twenty steps.\n", "epub")
    (folder / "manual.rst").write_text(
        "Seismograph\n===========\n\nCalibrating the drum\n--------------------\n\n"
        "Turn the drum calibration screw until the pen rests on the zero line.\n", encoding="utf-8")
    _pandoc(folder / "letter.odt", "# Orchard\n\nPrune the apple trees in late winter, before buds open.\n", "odt")
    return folder


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory) -> Path:
    """One document of every format (built once per test session; tests must copy before changing)."""
    return build_documents(tmp_path_factory.mktemp("docs") / "docs")
