"""`kb show PASSAGE_ID`: the passage's page written as a PNG whose highlight is where the sentence is, from an id
that `kb ask --json` gives."""

from __future__ import annotations

import json

import pytest
from evidence_docs import ZH, iou, make_pdf, yellow_pixels

from kb import KnowledgeBase
from kb.errors import PassageNotFoundError


def _invoke(*args):
    from typer.testing import CliRunner

    from kb.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def known(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    boxes = make_pdf(docs / "lighthouse.pdf")
    with KnowledgeBase.open("ev", settings=settings) as kb:
        assert not kb.ingest(docs).failed
    return boxes


def test_show_writes_the_page_with_the_sentence_highlighted_from_an_ask_passage_id(known, tmp_path):
    asked = _invoke("ask", "灯塔看守人什么时候记录雾笛测试？", "--kb", "ev", "--json", "--answer-mode", "extract")
    assert asked.exit_code == 0, asked.output
    passages = json.loads(asked.stdout)["passages"]
    ids = [i for p in passages if ZH in p["text"] for i in p["chunk_ids"]]
    assert ids, passages
    out = tmp_path / "page.png"
    shown = _invoke("show", str(ids[0]), "--kb", "ev", "--out", str(out), "--sentence", ZH)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == str(out)
    data = json.loads(_invoke("show", str(ids[0]), "--kb", "ev", "--sentence", ZH, "--json").stdout)
    xs, ys = yellow_pixels(out)
    box = [v * data["scale"] for v in known[ZH]]
    assert iou((xs.min(), ys.min(), xs.max(), ys.max()), box) >= 0.8
    assert data["page"] == 2 and data["kind"] == "pdf"


def test_show_refuses_an_unknown_or_malformed_id(known):
    result = _invoke("show", "987654", "--kb", "ev")
    assert isinstance(result.exception, PassageNotFoundError)
    assert "no passage 987654" in str(result.exception)
    result = _invoke("show", "../../etc/passwd", "--kb", "ev")
    assert result.exit_code == 2 and "passage_id" in result.output
