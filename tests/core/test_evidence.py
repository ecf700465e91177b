"""The evidence view (kb/evidence.py): a cited passage found on its page and drawn there highlighted.

Known answers: a reportlab PDF whose English and Chinese sentences stand at boxes computed from the font's
metrics (tests/evidence_docs.py); a scan drawn from known text, whose cited line's place is known; a Markdown
file whose sentence must be marked in its section. The bad cases are the ones a user meets: a moved or edited
original, an unknown id, an encrypted or damaged PDF, a page the file no longer has.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from evidence_docs import EN, OTHER, PAGE_HEIGHT, ZH, iou, make_pdf, tide_table, union, yellow_pixels

from kb import KnowledgeBase
from kb.errors import EvidenceError, PassageNotFoundError, SourceChangedError
from kb.evidence import view, view_page
from kb.evidence_pdf import get_page, open_pdf


@pytest.fixture
def pdf_kb(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    known = make_pdf(docs / "lighthouse.pdf")
    kb = KnowledgeBase.open("ev", settings=settings)
    assert not kb.ingest(docs).failed
    yield kb, known, docs / "lighthouse.pdf"
    kb.close()


def _passage(kb, text):
    doc = kb.documents()[0]
    return next(h for h in kb.chunks(doc.doc_id) if text in h.text)


def _cited(found):
    return [(b.x0, b.y0, b.x1, b.y1) for b in found.boxes if b.cited]


@pytest.mark.parametrize("sentence", [EN, ZH])
def test_the_cited_sentence_box_is_where_the_sentence_was_drawn(pdf_kb, sentence):
    kb, known, _ = pdf_kb
    hit = _passage(kb, sentence)
    assert hit.page == 2
    found = view(kb, hit.chunk_id, sentence)
    assert found.kind == "pdf" and found.page == 2 and found.note == ""
    assert found.page_size[1] == pytest.approx(PAGE_HEIGHT, abs=1)
    assert iou(union(_cited(found)), known[sentence]) >= 0.8
    other = EN if sentence == ZH else ZH
    if other in hit.text:  # the other sentence is outlined, not filled
        outlined = [(b.x0, b.y0, b.x1, b.y1) for b in found.boxes if not b.cited]
        assert any(iou(box, known[other]) >= 0.8 for box in outlined)
        assert iou(union(_cited(found)), known[other]) < 0.1


def test_the_png_is_yellow_exactly_where_the_sentence_is(pdf_kb):
    kb, known, _ = pdf_kb
    found = view(kb, _passage(kb, ZH).chunk_id, ZH)
    xs, ys = yellow_pixels(found.image)
    assert len(xs) > 500
    x0, y0, x1, y1 = (v * found.scale for v in known[ZH])
    pad = 2 * found.scale + 2
    inside = (xs >= x0 - pad) & (xs <= x1 + pad) & (ys >= y0 - pad) & (ys <= y1 + pad)
    assert inside.mean() > 0.99  # nothing yellow elsewhere on the page (the English line is only outlined)
    assert iou((xs.min(), ys.min(), xs.max(), ys.max()), (x0, y0, x1, y1)) >= 0.8


def test_without_a_sentence_the_whole_passage_is_highlighted_and_cached(pdf_kb):
    kb, known, _ = pdf_kb
    hit = _passage(kb, OTHER)
    found = view(kb, hit.chunk_id)
    assert found.page == 1 and found.sentence == ""
    assert all(b.cited for b in found.boxes) and found.boxes
    again = view(kb, hit.chunk_id)
    assert again == found  # from the cache: the same boxes and the same image file


def test_a_quote_not_in_the_passage_highlights_its_closest_sentence(pdf_kb):
    kb, known, _ = pdf_kb
    hit = _passage(kb, ZH)
    if EN not in hit.text:
        pytest.skip("the two sentences were split into two passages")
    found = view(kb, hit.chunk_id, "The keeper logs fog horn tests on Tuesdays")
    assert found.sentence == EN and "closest sentence" in found.note
    assert iou(union(_cited(found)), known[EN]) >= 0.8
    exact = view(kb, hit.chunk_id, EN)  # the same highlight, but quoted word for word: no note (cache included)
    assert exact.sentence == EN and exact.note == "" and exact.boxes == found.boxes


def test_an_unknown_passage_id_is_a_clear_error(pdf_kb):
    kb, _, _ = pdf_kb
    with pytest.raises(PassageNotFoundError, match="no passage 12345 in KB 'ev'"):
        view(kb, 12345)


def test_a_moved_original_is_reported_not_drawn(pdf_kb, tmp_path):
    kb, _, path = pdf_kb
    hit = _passage(kb, EN)
    shutil.move(path, tmp_path / "elsewhere.pdf")
    with pytest.raises(SourceChangedError, match=r"lighthouse\.pdf, is missing .*moved or deleted.*kb ingest"):
        view(kb, hit.chunk_id, EN)


def test_a_changed_original_is_reported_even_with_a_cached_image(pdf_kb, tmp_path):
    kb, _, path = pdf_kb
    hit = _passage(kb, EN)
    view(kb, hit.chunk_id, EN)  # cached now
    make_pdf(tmp_path / "other.pdf")
    data = (tmp_path / "other.pdf").read_bytes().replace(b"Tuesday", b"Fridays")
    path.write_bytes(data)
    with pytest.raises(SourceChangedError, match=r"changed after it was ingested .*content hash differs.*kb ingest"):
        view(kb, hit.chunk_id, EN)


def test_encrypted_damaged_and_short_pdfs_are_clear_errors(tmp_path):
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    locked = tmp_path / "locked.pdf"
    c = canvas.Canvas(str(locked), encrypt=pdfencrypt.StandardEncryption("secret", canPrint=0))
    c.drawString(72, 700, "hidden")
    c.save()
    with pytest.raises(EvidenceError, match="encrypted"):
        open_pdf(locked)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n this is not a pdf")
    with pytest.raises(EvidenceError, match="not a readable PDF"):
        open_pdf(broken)
    make_pdf(tmp_path / "two.pdf")
    pdf = open_pdf(tmp_path / "two.pdf")
    try:
        with pytest.raises(EvidenceError, match="has 2 pages, not a page 5"):
            get_page(pdf, 5, tmp_path / "two.pdf")
    finally:
        pdf.close()


def test_a_markdown_passage_comes_back_in_its_section_with_the_sentence_marked(settings, tmp_path):
    docs = tmp_path / "md"
    docs.mkdir()
    sentence = "The spare key hangs behind the boiler room door."
    (docs / "house.md").write_text(f"# House\n\n## Keys\n\nAsk the caretaker first. {sentence} Return it by noon.\n",
                                   encoding="utf-8")
    with KnowledgeBase.open("md", settings=settings) as kb:
        assert not kb.ingest(docs).failed
        hit = _passage(kb, sentence)
        found = view(kb, hit.chunk_id, sentence)
    assert found.kind == "text" and found.image is None and found.boxes == ()
    assert found.section.endswith("Keys")
    start, end = found.mark
    assert found.context[start:end] == sentence


def test_a_scanned_page_is_shown_with_the_cited_line_boxed_by_ocr(settings, tmp_path):
    import scans

    from kb.ingest.ocr import OcrOptions, available

    if scans.font_path() is None or not available(OcrOptions()).engine:
        pytest.skip("needs fonts-wqy-zenhei and an OCR engine")
    first, cited = "会议室预订须提前一天在系统中登记。", "长江厅可容纳八十人，配有投影仪和话筒。"
    page = scans.render_page([first, cited], seed=3)
    docs = tmp_path / "scan"
    docs.mkdir()
    scans.image_pdf([page], docs / "rooms.pdf")
    with KnowledgeBase.open("scan", settings=settings) as kb:
        report = kb.ingest(docs)
        assert not report.failed and report.files[0].ocr_pages == 1
        hit = _passage(kb, "长江厅")
        found = view(kb, hit.chunk_id, cited)
    assert found.kind == "scan" and found.note == ""
    # render_page's layout (150 dpi): the first line's top at 110 px, 41 px a line, 20 px between paragraphs
    to_pt = 72 / 150
    band = (171 * to_pt, (171 + 41) * to_pt)
    boxes = _cited(found)
    assert len(boxes) == 1
    middle = (boxes[0][1] + boxes[0][3]) / 2
    assert band[0] <= middle <= band[1]
    assert boxes[0][0] < 130 * to_pt  # from the left margin on
    xs, ys = yellow_pixels(found.image)
    assert len(xs) > 500 and band[0] * found.scale - 6 <= ys.min() and ys.max() <= band[1] * found.scale + 6


def test_the_readme_scan_question_shows_the_changjiang_row_on_page_2(settings, tmp_path):
    """The issue's done-when: the cited 长江厅 row of the sample scan's table is the highlight, cell by cell."""
    from kb.ingest.ocr import OcrOptions, available

    if not available(OcrOptions()).engine:
        pytest.skip("needs an OCR engine")
    sample = Path(__file__).resolve().parents[2] / "docs" / "samples" / "会议室与访客管理规定-扫描件.pdf"
    docs = tmp_path / "scan"
    docs.mkdir()
    shutil.copy(sample, docs)
    with KnowledgeBase.open("rooms", settings=settings) as kb:
        assert not kb.ingest(docs).failed
        answer = kb.ask("长江厅能坐多少人？", answer_mode="extract")
        cited = next(c for c in answer.citations if "长江厅" in c.sentence)
        passage = next(p for p in answer.passages if p.n == cited.n)
        found = view(kb, passage.chunk_ids[0], cited.sentence)
    assert found.kind == "scan" and found.page == 2
    assert "长江厅" in found.sentence and "黄河厅" not in found.sentence
    row = _cited(found)
    assert len(row) == 3  # the room, its capacity, its equipment
    middles = [(b[1] + b[3]) / 2 for b in row]
    assert max(middles) - min(middles) < 5  # one table row
    others = [(b.y0 + b.y1) / 2 for b in found.boxes if not b.cited]
    assert any(m < min(middles) for m in others) and any(m > max(middles) for m in others)  # header above, rows below


def test_a_photo_is_shown_itself_with_the_cited_line_boxed(settings, tmp_path):
    import scans

    from kb.ingest.ocr import OcrOptions, available

    if scans.font_path() is None or not available(OcrOptions()).engine:
        pytest.skip("needs fonts-wqy-zenhei and an OCR engine")
    first, cited = "本周五下午三点举行消防演练。", "请全体员工从东侧楼梯撤离到广场集合。"
    docs = tmp_path / "photo"
    docs.mkdir()
    scans.photo_of(scans.render_page([first, cited], size=(1200, 500), margin=60, seed=5), seed=6).save(
        docs / "notice.jpg", quality=80)
    with KnowledgeBase.open("photo", settings=settings) as kb:
        assert not kb.ingest(docs).failed
        found = view(kb, _passage(kb, "广场").chunk_id, cited)
    assert found.kind == "image" and found.page_size == (1200, 500) and found.scale == 1.0
    boxes = _cited(found)
    assert len(boxes) == 1
    # render_page: the first line's top at 60 px, 41 px a line, 20 px between paragraphs (the photo's warp moves
    # them by a few per cent)
    middle = (boxes[0][1] + boxes[0][3]) / 2
    assert 121 <= middle <= 121 + 41 + 15
    assert found.image.endswith(".png")


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_on_a_turned_page_the_box_is_where_the_page_shows_the_sentence(tmp_path, turn):
    """/Rotate: boxes are on the page as it is shown, where pdfium draws the sentence's ink."""
    import numpy as np
    from reportlab.pdfgen import canvas

    from kb.evidence_pdf import page_chars, passage_boxes, render_page

    path = tmp_path / "turned.pdf"
    c = canvas.Canvas(str(path), pagesize=(842, 595))
    c.setPageRotation(turn)
    c.setFont("Helvetica", 14)
    c.drawString(100, 300, EN)
    c.showPage()
    c.save()
    pdf = open_pdf(path)
    try:
        page = pdf[0]
        chars, rects, shown = page_chars(page)
        _, cited = passage_boxes(chars, rects, EN, EN, shown)
        ink = np.asarray(render_page(page, 1.0).convert("L")) < 128
    finally:
        pdf.close()
    ys, xs = np.nonzero(ink)
    assert len(cited) == 1
    assert iou(cited[0], (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) >= 0.8


def test_two_passages_of_one_page_share_one_image_with_both_sentences_filled(settings, tmp_path):
    docs = tmp_path / "tides"
    docs.mkdir()
    lines = tide_table(docs / "tides.pdf")
    with KnowledgeBase.open("tides", settings=settings) as kb:
        assert not kb.ingest(docs).failed
        first, last = _passage(kb, lines[0]), _passage(kb, lines[-1])
        assert first.chunk_id != last.chunk_id and first.page == last.page == 1
        one, two = view_page(kb, [(first.chunk_id, lines[0]), (last.chunk_id, lines[-1])])
        again = view_page(kb, [(first.chunk_id, lines[0]), (last.chunk_id, lines[-1])])
    assert one.image == two.image and Path(one.image).is_file() and (one, two) == again  # one PNG, cached
    assert (one.chunk_id, two.chunk_id) == (first.chunk_id, last.chunk_id)
    bands = []
    for found, n in ((one, 0), (two, len(lines) - 1)):
        baseline = PAGE_HEIGHT - (800 - 18 * n)  # from the page's top, in points
        (box,) = _cited(found)
        assert baseline - 12 <= box[1] < box[3] <= baseline + 4
        bands.append((baseline - 12, baseline + 5))
    _, ys = yellow_pixels(one.image)
    points = ys / one.scale
    inside = [(points >= a) & (points <= b) for a, b in bands]
    assert all(band.sum() > 100 for band in inside)  # both sentences filled on the one image
    assert (inside[0] | inside[1]).mean() > 0.99  # and nothing else


def test_passages_of_different_pages_are_not_drawn_on_one_image(pdf_kb):
    kb, _, _ = pdf_kb
    with pytest.raises(ValueError, match="one page"):
        view_page(kb, [(_passage(kb, OTHER).chunk_id, None), (_passage(kb, EN).chunk_id, EN)])
