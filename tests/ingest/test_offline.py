"""Ingest works with no network at all: unstructured's spaCy model comes from a package, not GitHub."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_patch_targets_exist():
    import unstructured.nlp.tokenize as tokenize
    import unstructured.partition.html.parser as html_parser

    assert callable(tokenize._load_spacy_model) and hasattr(tokenize._get_nlp, "cache_clear")
    assert callable(html_parser.derive_element_type_from_text)


def test_text_and_html_parse_offline(no_network, tmp_path):
    from unstructured.nlp.tokenize import _get_nlp, pos_tag

    from kb.ingest.loaders import load

    txt = tmp_path / "a.txt"
    txt.write_text("Install the package first.\n\nThen the server starts on boot and writes its logs daily.\n")
    html = tmp_path / "b.html"
    html.write_text("<h1>Setup</h1><p>The server starts on boot and writes its logs daily.</p>")
    assert any("logs daily" in e.text for e in load(txt))
    parsed = load(html)
    assert parsed[0].kind == "title" and parsed[0].text == "Setup"
    # the real English pipeline answered, loaded from the package on disk
    assert _get_nlp().meta["name"].startswith("core_web_sm")
    assert ("starts", "VBZ") in pos_tag("The server starts on boot.")


def test_whole_ingest_offline(no_network, settings, tmp_path):
    from kb import KnowledgeBase

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "n.md").write_text("# Notes\n\nThe night shift locks the loading dock at ten.\n")
    base = KnowledgeBase.open("offline", settings=settings)
    report = base.ingest(folder)
    assert report.count("added") == 1 and not report.failed
    assert base.search("who locks the dock", k=1)[0].path.endswith("n.md")


def test_scans_are_read_offline(no_network, tmp_path):
    """RapidOCR's models come from its wheel and wordninja's words from its package: OCR needs no network."""
    import scans

    from kb.ingest.loaders import load
    from kb.ingest.ocr import OcrOptions, OcrRun, available

    if scans.font_path() is None or available(OcrOptions())[0] != "rapidocr":
        pytest.skip("needs fonts-wqy-zenhei and the ocr extra")
    image = tmp_path / "sign.png"
    scans.render_page(["Deliveries go to the loading dock behind building B."], size=(1000, 300), margin=40,
                      seed=9).save(image)
    run = OcrRun()
    assert "loading dock behind building B" in " ".join(e.text for e in load(image, ocr=run))
    assert run.engine == "rapidocr" and run.pages == 1
