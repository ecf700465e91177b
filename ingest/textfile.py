"""Decode text files whose encoding nobody wrote down.

Order: a byte-order mark wins; then strict UTF-8; then UTF-16 without a BOM (recognised by its
zero bytes); then charset-normalizer's best guess among the encodings users actually have
(GB18030 covers GBK and GB2312, Big5, Shift-JIS, the Windows code pages...).
"""

from __future__ import annotations

import codecs
import re

from kb.text.lang import CJK_PUNCT, FULLWIDTH, HAN, HANGUL, KANA

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# GBK and GB2312 are subsets of GB18030: decoding with the superset never loses a character.
_WIDEN = {"gbk": "gb18030", "gb2312": "gb18030", "cp936": "gb18030", "big5": "big5hkscs"}


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Return (text, encoding name). Raises UnicodeError when the bytes are not text."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(name), name + "-bom"
    utf16 = _guess_utf16(data)
    if utf16:
        return data.decode(utf16), utf16
    if _looks_binary(data[:8192]):
        raise UnicodeError("binary content (control bytes), not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass

    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnicodeError("could not detect the text encoding")
    name = _WIDEN.get(best.encoding.lower().replace("_", ""), best.encoding)
    return data.decode(name, errors="replace"), name


def _looks_binary(sample: bytes) -> bool:
    """NUL bytes, or many control bytes other than tab / newline / carriage return / form feed."""
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return controls > len(sample) * 0.05


def _guess_utf16(data: bytes) -> str | None:
    """UTF-16 without BOM: mostly-ASCII or CJK text leaves a zero in every other byte."""
    sample = data[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    half = len(sample) // 2
    for zeros, other, name in ((odd_zeros, even_zeros, "utf-16-le"), (even_zeros, odd_zeros, "utf-16-be")):
        if zeros > half * 0.3 and other < half * 0.05:
            try:
                data.decode(name)
            except UnicodeDecodeError:
                continue
            return name
    if b"\x00" in sample:  # CJK text in UTF-16 has few zero bytes (only its ASCII: newlines, digits)
        return _utf16_by_script(data)
    return None


# Code points that real text is made of: ASCII, Latin-1, CJK punctuation, kana, CJK ideographs,
# Hangul, full-width forms. The wrong byte order scatters the same text over unrelated blocks.
_TEXTLIKE = re.compile(rf"[\t\n\r\x20-\x7e\u00a0-\u024f\u2000-\u206f{CJK_PUNCT}{KANA}{HAN}{HANGUL}{FULLWIDTH}]")


def _utf16_by_script(data: bytes) -> str | None:
    """The UTF-16 byte order under which the text is (almost all) ordinary characters, if any."""
    sample = data[: 8192 - 8192 % 2] if len(data) % 2 == 0 else None
    if not sample:
        return None
    for name in ("utf-16-le", "utf-16-be"):
        try:
            text = sample.decode(name)
        except UnicodeDecodeError:
            continue
        if len(_TEXTLIKE.findall(text)) >= 0.95 * len(text):
            try:
                data.decode(name)
            except UnicodeDecodeError:
                continue
            return name
    return None
