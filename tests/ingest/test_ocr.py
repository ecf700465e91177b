"""Scanned PDFs and images: built here from known Chinese and English text (tests/scans.py), ingested
through OCR, then found by paraphrased questions on the right page, with the characters read right."""

from __future__ import annotations

import os
import shutil

import pytest
import scans
from PIL import Image

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import ParseError
from kb.ingest.loaders import load
from kb.ingest.ocr import OcrOptions, OcrRun, available
from kb.ingest.ocr_engines import restore_spaces, tesseract_lines
from kb.ingest.ocr_layout import Line, page_elements, unpack_lines

pytestmark = pytest.mark.skipif(scans.font_path() is None, reason="needs Debian's fonts-wqy-zenhei")

EN = [
    ("Harbour Operations Manual",
     ["The harbour pilot boards every container ship at the outer buoy and guides it to berth seven.",
      "Tug crews change shifts at six in the morning and at six in the evening, every day of the year."]),
    (None,
     ["Fuel barges may only refuel vessels at the eastern quay, and never inside the marina.",
      "Any oil spill, however small, is reported to the harbour master by radio at once."]),
]
ZH = [
    ("食堂管理办法",
     ["员工食堂每天早上七点开始供应早餐，午餐时间为十一点半到一点。",
      "外来访客在食堂用餐，需要提前一天向行政部登记。"]),
    (None, ["食堂每月最后一个周五进行全面消毒，当天只提供盒饭。"]),
]
ZH_TABLE = [["餐别", "价格", "供应时间"], ["早餐", "5 元", "7:00-9:00"], ["午餐", "15 元", "11:30-13:00"]]

# (file, paraphrased question, page or None)
CASES = [
    ("scan-en.pdf", "where does the pilot get on board the cargo vessels", 1),
    ("scan-en.pdf", "which dock can boats take on fuel", 2),
    ("scan-zh.pdf", "食堂几点开始提供早饭", 1),
    ("scan-zh.pdf", "午饭多少钱", 2),
    ("scan-zh.pdf", "食堂什么时候消毒", 2),
    ("mixed.pdf", "兰花多久浇一次水", 2),
    ("mixed.pdf", "how long do the greenhouse sprinklers run", 1),
    ("notice.jpg", "大楼周六什么时候停水", None),
    ("screenshot.png", "what does a 504 error mean", None),
    ("fax.tiff", "中标以后多久要签采购合同", 2),
    ("permit.bmp", "when do parking permits stop being valid", None),
    ("holiday.webp", "does the cafeteria close earlier on holidays", None),
]


def _pages(spec, seed: int, table=None):
    pages = []
    for i, (title, paras) in enumerate(spec):
        last = i == len(spec) - 1
        pages.append(scans.render_page(paras, title=title, seed=seed + i, table=table if last else None))
    return pages


def _truth(spec, table=None) -> list[str]:
    out = []
    for i, (title, paras) in enumerate(spec):
        text = (title or "") + "".join(paras)
        if table and i == len(spec) - 1:
            text += "".join("".join(row) for row in table)
        out.append(text)
    return out


def _mixed_pdf(path, scan) -> None:
    """Pages 1 and 3 have a text layer; page 2 is a scanned picture."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    c.setFont("Helvetica", 12)
    c.drawString(60, 750, "The greenhouse sprinklers run for twenty minutes at dawn, then switch off.")
    c.showPage()
    c.drawImage(ImageReader(scan), 0, 0, width=595, height=842)
    c.showPage()
    c.setFont("Helvetica", 12)
    c.drawString(60, 750, "Compost bins are turned every second Tuesday by the garden volunteers.")
    c.showPage()
    c.save()


def build_scans(folder):
    """The scanned files of CASES; returns {name: [truth text per page]} for the PDFs."""
    scans.image_pdf(_pages(EN, 1), folder / "scan-en.pdf")
    scans.image_pdf(_pages(ZH, 10, ZH_TABLE), folder / "scan-zh.pdf")
    _mixed_pdf(folder / "mixed.pdf", scans.render_page(["温室里的兰花每周只浇一次水，冬天两周一次。"], seed=20))
    notice = scans.render_page(["因管道维修，本周六上午九点至下午三点大楼停止供水，请提前储水。"], title="停水通知", seed=21)
    scans.photo_of(notice, seed=22).save(folder / "notice.jpg", quality=75)
    scans.render_page(["Error 504 means the gateway timed out while it waited for the upstream server."],
                      size=(1400, 500), margin=60, scanned=False).save(folder / "screenshot.png")
    fax = [scans.render_page(["Fax cover sheet: please deliver these pages to the purchasing department."], seed=23),
           scans.render_page(["中标单位须在十个工作日内与采购部签订采购合同。"], seed=24)]
    fax[0].save(folder / "fax.tiff", save_all=True, append_images=fax[1:], compression="tiff_deflate")
    scans.render_page(["Parking permits expire on the last day of March each year."], size=(1200, 400),
                      margin=50, seed=25).save(folder / "permit.bmp")
    scans.render_page(["The cafeteria closes two hours early on public holidays."], size=(1200, 400), margin=50,
                      seed=26).save(folder / "holiday.webp", quality=85)
    return {"scan-en.pdf": _truth(EN), "scan-zh.pdf": _truth(ZH, ZH_TABLE)}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    if not available(OcrOptions())[0]:
        pytest.skip("no OCR engine installed (pip install 'kb[ocr]')")
    folder = tmp_path_factory.mktemp("scans")
    truth = build_scans(folder)
    home = tmp_path_factory.mktemp("scans-home")
    events = []
    base = KnowledgeBase.open("scans", settings=Settings(home=home))
    report = base.ingest(folder, progress=events.append)
    yield base, report, folder, truth, events
    base.close()


def test_every_scan_and_image_is_ingested_through_ocr(scanned):
    _, report, folder, _, _ = scanned
    assert [(f.path, f.reason) for f in report.failed] == []
    pages = {os.path.basename(f.path): f.ocr_pages for f in report.files}
    assert pages == {"scan-en.pdf": 2, "scan-zh.pdf": 2, "mixed.pdf": 1, "notice.jpg": 1, "screenshot.png": 1,
                     "fax.tiff": 2, "permit.bmp": 1, "holiday.webp": 1}
    assert report.ocr_pages == 11 and report.ocr_seconds > 0 and report.ocr_engine


@pytest.mark.parametrize("name,query,page", CASES, ids=[f"{c[0]}:{c[1][:14]}" for c in CASES])
def test_a_paraphrased_question_finds_the_page(scanned, name, query, page):
    base = scanned[0]
    hits = base.search(query, k=3)
    assert hits and hits[0].path.endswith("/" + name), f"{query!r} -> {[h.location for h in hits]}"
    assert hits[0].page == page


def test_ocr_progress_is_reported_page_by_page(scanned):
    events = [e for e in scanned[4] if e.kind == "page"]
    by_file = {}
    for e in events:
        by_file.setdefault(os.path.basename(e.path), []).append((e.page, e.total))
    assert by_file["scan-zh.pdf"] == [(1, 2), (2, 2)]
    assert by_file["mixed.pdf"] == [(2, 3)]  # only the scanned page is OCR'd
    assert by_file["fax.tiff"] == [(1, 2), (2, 2)]


@pytest.mark.parametrize("name", ["scan-en.pdf", "scan-zh.pdf"])
def test_character_accuracy_is_at_least_95_percent(scanned, name):
    _, _, folder, truth, _ = scanned
    elements = load(folder / name, ocr=OcrRun())
    for page, expected in enumerate(truth[name], start=1):
        read = "".join(e.text if not e.rows else "".join("".join(r) for r in e.rows)
                       for e in elements if e.page == page)
        accuracy = scans.char_accuracy(read, expected)
        assert accuracy >= 0.95, f"{name} p. {page}: {accuracy:.3f}\n{read}\n{expected}"


def test_layout_keeps_headings_paragraphs_and_table_rows(scanned):
    _, _, folder, _, _ = scanned
    elements = load(folder / "scan-zh.pdf", ocr=OcrRun())
    assert (elements[0].kind, elements[0].text, elements[0].page) == ("title", "食堂管理办法", 1)
    first = [e.text for e in elements if e.page == 1 and e.kind == "text"]
    assert len(first) == 2 and first[0].startswith("员工食堂") and first[1].startswith("外来访客")
    table = next(e for e in elements if e.kind == "table")
    assert table.page == 2 and len(table.rows) == 3 and [len(r) for r in table.rows] == [3, 3, 3]
    assert table.rows[2][0] == "午餐" and table.rows[2][1].replace(" ", "") == "15元"
    base = scanned[0]
    hit = base.search("午餐 价格", k=1, mode="bm25")[0]
    assert "午餐" in hit.text and "|" in hit.text  # the row stays a row in the chunk


def _tesseract_or_skip():
    if shutil.which("tesseract") is None:
        if os.environ.get("CI_REQUIRE_OCR_TOOLS"):
            pytest.fail("tesseract is missing, and CI_REQUIRE_OCR_TOOLS is set (.ci/run installs it)")
        pytest.skip("tesseract not installed (apt install tesseract-ocr tesseract-ocr-chi-sim)")


@pytest.mark.parametrize("name,minimum", [("scan-en.pdf", 0.95), ("scan-zh.pdf", 0.85)])
def test_tesseract_reads_the_same_scans(scanned, name, minimum):
    """The alternative engine; its Chinese is weaker (measured in tests/bench/bench_ocr.py)."""
    _tesseract_or_skip()
    _, _, folder, truth, _ = scanned
    run = OcrRun(OcrOptions(engine="tesseract"))
    elements = load(folder / name, ocr=run)
    assert run.engine == "tesseract" and run.pages == 2
    for page, expected in enumerate(truth[name], start=1):
        read = "".join(e.text if not e.rows else "".join("".join(r) for r in e.rows)
                       for e in elements if e.page == page)
        assert scans.char_accuracy(read, expected) >= minimum, read


def test_ocr_off_reports_scans_and_keeps_text_pages(scanned, tmp_path):
    _, _, folder, _, _ = scanned
    off = OcrRun(OcrOptions(engine="off"))
    with pytest.raises(ParseError, match=r"no text layer \(2 scanned pages\) and OCR is off"):
        load(folder / "scan-en.pdf", ocr=off)
    with pytest.raises(ParseError, match="OCR is off"):
        load(folder / "notice.jpg", ocr=off)
    off = OcrRun(OcrOptions(engine="off"))
    elements = load(folder / "mixed.pdf", ocr=off)
    assert {e.page for e in elements} == {1, 3} and off.unread == 1 and off.pages == 0


def test_no_engine_installed_names_the_install(monkeypatch, tmp_path):
    from kb.ingest import ocr

    monkeypatch.setattr(ocr, "_rapidocr_missing", lambda: "rapidocr is not installed (pip install 'kb[ocr]')")
    monkeypatch.setattr(ocr, "_tesseract_missing", lambda: "tesseract is not installed (apt install tesseract-ocr)")
    image = tmp_path / "note.png"
    scans.render_page(["Some text."], size=(600, 200), margin=20, scanned=False).save(image)
    with pytest.raises(ParseError, match=r"needs OCR, and rapidocr is not installed \(pip install 'kb\[ocr\]'\); "
                                         r"tesseract is not installed"):
        load(image, ocr=OcrRun())


def test_bad_images_are_reported_with_their_reason(tmp_path):
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000), 1).save(huge)  # 400 megapixels, a few hundred kB on disk
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(5000))
    good = tmp_path / "cut.jpg"
    scans.render_page(["The ferry leaves at noon."], size=(800, 300), margin=30).save(good, quality=80)
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[:1500])
    scans.render_page([], size=(800, 600), seed=3).save(tmp_path / "blank.png")
    expected = {"huge.png": "image too large (20,000×20,000 = 400 megapixels",
                "corrupt.png": "not a readable image", "truncated.jpg": "damaged image",
                "blank.png": "no text found in the image"}
    for name, reason in expected.items():
        with pytest.raises(ParseError) as caught:
            load(tmp_path / name, ocr=OcrRun())
        assert reason in caught.value.reason, (name, caught.value.reason)
        assert str(tmp_path / name) in str(caught.value)


def test_ingest_settings_choose_the_engine(settings, tmp_path, monkeypatch):
    from kb.config import load_settings
    from kb.errors import ConfigError

    config = tmp_path / "kb.yaml"
    monkeypatch.setenv("KB_CONFIG", str(config))
    config.write_text("ingest:\n  ocr: tesseract\n  ocr_min_confidence: 0.7\n  max_image_megapixels: 20\n",
                      encoding="utf-8")
    options = OcrOptions.from_settings(load_settings().ingest)
    assert (options.engine, options.min_confidence, options.max_image_pixels) == ("tesseract", 0.7, 20_000_000)
    config.write_text("ingest:\n  ocr: abbyy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="ingest.ocr"):
        load_settings()


# -- the layout rules, on boxes given by hand ------------------------------------------------------------
def _line(text, x0, y0, x1, y1, confidence=0.99):
    return Line(text, x0, y0, x1, y1, confidence)


def test_compatibility_ideographs_are_one_em_wide_like_the_others():
    # kb.text.lang.HAN holds the compatibility block (U+F900-FAFF): the 﨑 of the surname 山﨑 is as wide as 崎.
    assert _line("山﨑", 0, 0, 40, 20).em == _line("山崎", 0, 0, 40, 20).em == 20


def test_rows_of_aligned_cells_become_a_table():
    lines = [_line("城市", 100, 100, 160, 130), _line("上限", 400, 102, 460, 132), _line("说明", 700, 99, 760, 129),
             _line("北京", 100, 150, 160, 180), _line("600 元", 400, 151, 490, 181), _line("含税", 700, 149, 760, 179)]
    (table,) = page_elements(lines, 3)
    assert table.kind == "table" and table.page == 3
    assert table.rows == (("城市", "上限", "说明"), ("北京", "600 元", "含税"))


def test_two_wide_columns_are_read_column_by_column():
    left = ["The left column starts", "and goes on here.", "It ends on this line."]
    right = ["The right column starts", "and continues down", "to its own end."]
    lines = []
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        y = 100 + i * 40
        lines += [_line(a, 100, y, 560, y + 28), _line(b, 640, y + 2, 1100, y + 30)]
    texts = [e.text for e in page_elements(lines, 1)]
    assert texts == ["The left column starts and goes on here. It ends on this line.",
                     "The right column starts and continues down to its own end."]


def test_gaps_and_larger_type_make_headings_and_paragraphs():
    lines = [_line("Visitor Rules", 100, 100, 420, 150),  # larger type: about 49 px per em against 20
             _line("Every visitor signs in at the front desk and wears a", 100, 200, 620, 228),
             _line("badge at all times.", 100, 236, 290, 264),
             _line("Lost badges are reported to security within the hour.", 100, 320, 640, 348)]
    elements = page_elements(lines, None)
    assert [(e.kind, e.text) for e in elements] == [
        ("title", "Visitor Rules"),
        ("text", "Every visitor signs in at the front desk and wears a badge at all times."),
        ("text", "Lost badges are reported to security within the hour."),
    ]


def test_low_confidence_lines_are_dropped(monkeypatch):
    from kb.ingest import ocr

    run = OcrRun(OcrOptions(min_confidence=0.8))

    class Fixed:  # an engine that returns known lines
        name = "fixed"

        def read(self, image):
            return [_line("kept line of text", 10, 10, 200, 30, 0.95), _line("n0ise", 10, 50, 80, 70, 0.42)]

    monkeypatch.setattr(ocr, "get_engine", lambda options, path: Fixed())
    elements = run.read(Image.new("L", (400, 100), 255), 1, "x.png")
    assert [e.text for e in elements] == ["kept line of text"] and run.pages == 1
    kept = unpack_lines(run.lines[1], 400, 100)  # the page's lines kept for evidence: the same ones, boxes as read
    assert [(x.text, x.x0, x.y0, x.x1, x.y1) for x in kept] == [("kept line of text", 10, 10, 200, 30)]


def test_spaces_dropped_by_the_recogniser_are_put_back():
    assert restore_spaces("Visitors mustsign inat the frontdesk; wear abadge atall times;lost badges") == \
        "Visitors must sign in at the front desk; wear a badge at all times; lost badges"
    for kept in ("internationalization", "nginx", "eth0", "Zhang Wei", "一线城市 600元", "e.g. www.example.com"):
        assert restore_spaces(kept) == kept


def test_tesseract_words_join_into_lines_and_cells():
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [(1, 1, 1, 1, 100, 100, 40, 30, 96, "出差"), (1, 1, 1, 2, 140, 100, 40, 30, 90, "标准"),
            (1, 1, 1, 3, 400, 100, 60, 30, 93, "600"), (1, 1, 1, 4, 470, 100, 30, 30, 91, "元"),
            (1, 1, 2, 1, 100, 150, 80, 30, 95, "Hotel"), (1, 1, 2, 2, 190, 150, 60, 30, 85, "limit")]
    tsv = "\n".join([header] + ["5\t1\t" + "\t".join(map(str, r)) for r in rows])
    lines = tesseract_lines(tsv)
    assert [(x.text, x.x0) for x in lines] == [("出差标准", 100), ("600 元", 400), ("Hotel limit", 100)]
    assert lines[0].confidence == pytest.approx(0.93)


def test_cli_reports_pages_read_and_scans_left_unread(scanned, settings, tmp_path):
    import json
    import subprocess
    import sys

    _, _, folder, _, _ = scanned
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(folder / "mixed.pdf", docs)

    def ingest(*args, **env):
        return subprocess.run([sys.executable, "-m", "kb.cli", "ingest", str(docs), *args],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=600)

    off = ingest("--kb", "off", KB_INGEST__OCR="off")
    assert off.returncode == 0, off.stderr
    assert "1 scanned pages in 1 files were not read: OCR is off (ingest.ocr: off)" in " ".join(off.stderr.split())
    done = ingest("--kb", "on", "--json")
    report = json.loads(done.stdout)
    assert report["ocr"]["pages"] == 1 and report["ocr"]["unread_pages"] == 0 and report["ocr"]["engine"]
    assert report["files"][0]["ocr_pages"] == 1
    text = ingest("--kb", "on2")
    assert "OCR (" in text.stdout and "read 1 scanned pages or images in 1 files" in text.stdout


def test_a_scan_with_a_digital_stamp_is_still_read_and_a_text_page_with_a_logo_is_not(tmp_path):
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    if not available(OcrOptions())[0]:
        pytest.skip("no OCR engine installed")
    scan = scans.render_page(["The night shift locks the loading bay at ten and hands the keys to security."],
                             seed=31)
    logo = scans.render_page(["LOGO"], size=(200, 80), margin=10, scanned=False)
    path = tmp_path / "stamped.pdf"
    c = canvas.Canvas(str(path))
    c.drawImage(ImageReader(scan), 0, 0, width=595, height=842)
    c.setFont("Helvetica", 9)
    c.drawString(40, 820, "CONFIDENTIAL - Harbour Operations - scanned copy, page 1 of 2")  # 50+ characters
    c.showPage()
    c.drawImage(ImageReader(logo), 40, 760, width=100, height=40)
    c.setFont("Helvetica", 11)
    for i, line in enumerate(["The quarterly safety review found no open issues in the warehouse.",
                              "Forklift licences were renewed for all twelve drivers in March.",
                              "The next review is planned for the first week of July."]):
        c.drawString(40, 700 - 16 * i, line)
    c.showPage()
    c.save()
    run = OcrRun()
    elements = load(path, ocr=run)
    assert run.pages == 1  # only the stamped scan
    first = " ".join(e.text for e in elements if e.page == 1)
    assert "locks the loading bay" in first and "CONFIDENTIAL" in first
    assert any("Forklift licences were renewed" in e.text for e in elements if e.page == 2)
