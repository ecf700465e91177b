"""The app's plain functions: safe upload names, where uploads are written, which sentence is highlighted."""

from __future__ import annotations

import pytest

from kb.app.sources import best_sentence, highlighted_html
from kb.config import Settings
from kb.errors import KBError
from kb.uploads import refusal, safe_name, store_upload


def test_upload_names_lose_their_directories_and_dots_but_keep_chinese():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\boot.ini") == "boot.ini"
    assert safe_name("/abs/报告.pdf") == "报告.pdf"
    for nothing in ("..", "", "/", " . "):
        with pytest.raises(KBError, match="no usable file name"):
            safe_name(nothing)
    assert safe_name(".bashrc") == "bashrc"
    assert safe_name("a\x00b\nc?.txt") == "a_b_c_.txt"
    long = safe_name("长" * 200 + ".pdf")
    assert long.endswith(".pdf") and len(long.encode()) <= 200


def test_uploads_stay_in_the_folder_and_do_not_follow_links(tmp_path):
    settings = Settings(home=tmp_path, server={"max_upload_mb": 100 / (1 << 20)})  # 100 bytes
    folder = tmp_path / "uploads" / "kb"
    assert store_upload(folder, "../../outside.txt", b"hello") == (folder / "outside.txt").resolve()
    assert not (tmp_path / "outside.txt").exists()
    (folder / "link.txt").symlink_to(tmp_path / "target.txt")
    with pytest.raises(KBError, match="points outside"):
        store_upload(folder, "link.txt", b"hello")
    assert not (tmp_path / "target.txt").exists()
    big = refusal("big.txt", 101, settings)
    assert big.status == 413 and "more than server.max_upload_mb" in str(big)
    assert refusal("fits.txt", 100, settings) is None
    assert refusal("..", 1, settings).status == 400 and "no usable file name" in str(refusal("..", 1, settings))
    assert refusal("tool.exe", 10, settings).status == 415 and refusal("empty.md", 0, settings).status == 400


def test_the_cited_sentence_is_the_one_highlighted():
    passage = "Backups run nightly. Hourly snapshots are kept for two days. Tapes go offsite."
    start, end = best_sentence(passage, "Hourly snapshots are kept for 2 days.")
    assert passage[start:end].strip() == "Hourly snapshots are kept for two days."
    html = highlighted_html("<b>一线城市每晚六百元。</b>其他城市三百五十元。", ["一线城市的住宿标准是每晚六百元"])
    assert html.count("<mark>") == 1 and "&lt;b&gt;" in html and "<b>" not in html
    assert "<mark>&lt;b&gt;一线城市每晚六百元。</mark>" in html
