"""Encoding detection gives back exactly the text that was written."""

from __future__ import annotations

import pytest

from kb.ingest.textfile import decode_bytes

ZH = "知识库把文档切成段落，然后建立索引。用户提问时，系统找到最相关的段落并给出出处。"
TW = "知識庫把文件切成段落，然後建立索引。使用者提問時，系統找到最相關的段落並給出出處。"


@pytest.mark.parametrize("text,encoding", [
    (ZH, "utf-8"), (ZH, "utf-8-sig"), (ZH, "utf-16"), (ZH, "utf-16-le"), (ZH, "utf-16-be"),
    (ZH, "gbk"), (ZH, "gb18030"), (TW, "big5"), ("Plain ASCII text, nothing else.", "ascii"),
    ("Le café est très agréable à Paris, où l'été dure longtemps et où les élèves préfèrent la forêt.",
     "latin-1"),
])
def test_round_trip(text, encoding):
    data = text.encode(encoding)
    if encoding == "utf-16-le" or encoding == "utf-16-be":
        data = ("Mixed ASCII so the zero bytes show. " + text).encode(encoding)
        text = "Mixed ASCII so the zero bytes show. " + text
    decoded, _ = decode_bytes(data)
    assert decoded == text


def test_binary_is_refused():
    with pytest.raises(UnicodeError):
        decode_bytes(bytes(range(256)) * 8)
