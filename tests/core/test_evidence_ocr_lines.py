"""The OCR lines ingest keeps for showing a scanned passage on its page: every OCR'd page of the README's sample
scan has its lines kept (a few hundred bytes a page), a view draws the cited 长江厅 row from them without reading
the page again, and agrees with reading it again (what a KB built before kept them, or a Milvus KB, does)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from kb import KnowledgeBase, evidence_scan
from kb.evidence import view
from kb.ingest.ocr import OcrOptions, available
from kb.ingest.ocr_layout import Line, pack_lines, unpack_lines

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "会议室与访客管理规定-扫描件.pdf"


def test_packed_lines_keep_text_and_boxes_as_fractions_of_the_image():
    lines = [Line("长江厅 | 20人", 100, 50, 700, 90, 0.98), Line("Projector", 0, 0, 1600, 1131, 0.7)]
    data = pack_lines(lines, 1600, 1131)
    back = unpack_lines(data, 800.0, 565.5)  # the same page at half the size
    assert [x.text for x in back] == ["长江厅 | 20人", "Projector"]
    assert back[0].x0 == pytest.approx(50, abs=0.1) and back[0].y1 == pytest.approx(45, abs=0.1)
    assert back[1].x1 == pytest.approx(800, abs=0.1) and back[1].y1 == pytest.approx(565.5, abs=0.1)


def _cited_row(found):
    return sorted((round(b.x0), round(b.y0), round(b.x1), round(b.y1)) for b in found.boxes if b.cited)


def test_the_sample_scan_keeps_its_lines_and_is_drawn_from_them(settings, tmp_path, monkeypatch):
    if not available(OcrOptions()).engine:
        pytest.skip("needs an OCR engine")
    docs = tmp_path / "scan"
    docs.mkdir()
    shutil.copy(SAMPLE, docs)
    with KnowledgeBase.open("rooms", settings=settings) as kb:
        report = kb.ingest(docs)
        assert not report.failed and report.files[0].ocr_pages >= 2
        answer = kb.ask("长江厅能坐多少人？", answer_mode="extract")
        cited = next(c for c in answer.citations if "长江厅" in c.sentence)
        chunk_id = next(p for p in answer.passages if p.n == cited.n).chunk_ids[0]
        doc_id = kb.around(chunk_id, 0)[0][0].doc_id
        kept = {page: kb.page_lines(doc_id, page) for page in range(1, report.files[0].ocr_pages + 1)}
        assert all(kept.values())
        assert any("长江厅" in x.text for x in unpack_lines(kept[2], 1, 1))

        def no_ocr(*args, **kwargs):
            raise AssertionError("the page was read with OCR again")

        with monkeypatch.context() as m:  # drawn from the kept lines only
            m.setattr(evidence_scan, "read_lines", no_ocr)
            found = view(kb, chunk_id, cited.sentence)
        assert found.kind == "scan" and found.page == 2 and "without highlight" not in found.note
        row = _cited_row(found)
        assert len(row) == 3 and max(b[1] for b in row) - min(b[1] for b in row) < 5  # the row's three cells

    db = sqlite3.connect(settings.home_dir / "kbs" / "rooms" / "meta.sqlite")
    with db:
        db.execute("DELETE FROM page_lines")  # a KB built before kb kept them
    db.close()
    shutil.rmtree(settings.home_dir / "cache", ignore_errors=True)
    read = []
    reader = evidence_scan.read_lines
    monkeypatch.setattr(evidence_scan, "read_lines", lambda *a: read.append(1) or reader(*a))
    with KnowledgeBase.open("rooms", settings=settings) as kb:
        assert kb.page_lines(doc_id, 2) is None
        again = view(kb, chunk_id, cited.sentence)  # read with OCR at view time
    assert read == [1]
    assert again.kind == "scan" and len(_cited_row(again)) == 3
    for kept_box, read_box in zip(row, _cited_row(again)):
        assert all(abs(a - b) <= 3 for a, b in zip(kept_box, read_box))  # the same row, within 3 points
