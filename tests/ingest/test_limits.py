"""The per-file limits and the OCR options take their defaults from the `ingest` settings (one definition),
and a file past a limit is reported with the setting that would let it in."""

from __future__ import annotations

import zipfile

import pytest

from kb.config import IngestSettings
from kb.errors import ParseError
from kb.ingest.loaders import Limits, load
from kb.ingest.ocr import OcrOptions, available


def test_defaults_are_the_settings_defaults():
    assert Limits() == Limits.from_settings(IngestSettings())
    assert OcrOptions() == OcrOptions.from_settings(IngestSettings())
    assert Limits().file_bytes == int(IngestSettings().max_file_mb * 2**20)


def test_a_file_past_a_limit_names_the_setting(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("name,value\n" + "".join(f"row {i},{i}\n" for i in range(200)), encoding="utf-8")
    assert load(table, Limits())[0].rows[1] == ("row 0", "0")
    with pytest.raises(ParseError, match=r"file too large .*ingest\.max_file_mb"):
        load(table, Limits(file_bytes=1000))
    with pytest.raises(ParseError, match=r"too much text .*ingest\.max_text_chars"):
        load(table, Limits(text_chars=100))


def test_a_zip_bomb_is_refused_before_it_is_parsed(tmp_path):
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "<w/>" + " " * (3 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ParseError, match=r"unpacks to 3 MB of XML .*ingest\.max_unzipped_mb"):
        load(bomb, Limits(unzipped_xml_bytes=1 << 20))


def test_ocr_availability_names_its_fields():
    off = available(OcrOptions(engine="off"))
    assert off.engine == "" and "ingest.ocr: off" in off.why
    engine, why = off  # still a pair for callers that unpack it (kb doctor)
    assert (engine, why) == (off.engine, off.why)
