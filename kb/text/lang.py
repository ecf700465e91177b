"""How kb tells Chinese text from English: one definition, imported wherever it is needed.

Chinese here means CJK ideographs (the unified block, extension A and the compatibility block); a text
is 'zh' when its ideographs outnumber its Latin words, so '用 json.dumps 输出中文' is Chinese and
'What does 差旅 mean?' is English.
"""

from __future__ import annotations

import re

# Character ranges, for building a regex class where a module needs more than "is it Chinese" (a
# tokenizer's runs, text-likeness, OCR line joining): each range is written here once.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # ideographs: extension A, unified, compatibility
CJK_PUNCT = "\u3000-\u303f"  # ideographic space, 、。「」【】
KANA = "\u3040-\u30ff"
HANGUL = "\uac00-\ud7af"
FULLWIDTH = "\uff00-\uffef"  # ，！？：（） and full-width Latin

CJK = re.compile(f"[{HAN}]")
LATIN_WORD = re.compile(r"[A-Za-z]+")
LANGUAGES = ("en", "zh")


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def language(text: str) -> str:
    """'zh' when Chinese characters outnumber Latin words, else 'en'."""
    return "zh" if len(CJK.findall(text)) >= max(1, len(LATIN_WORD.findall(text))) else "en"


def weight(text: str) -> int:
    """How much `text` says, for length limits that hold in both languages: a Chinese character weighs two,
    anything else one (a Chinese sentence is about half as many characters as its English)."""
    return len(text) + len(CJK.findall(text))
