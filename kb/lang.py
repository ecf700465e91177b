"""How kb tells Chinese text from English: one definition, imported wherever it is needed.

Chinese here means CJK ideographs (the unified block, extension A and the compatibility block); a text
is 'zh' when its ideographs outnumber its Latin words, so '用 json.dumps 输出中文' is Chinese and
'What does 差旅 mean?' is English.
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]+")
LANGUAGES = ("en", "zh")


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def language(text: str) -> str:
    """'zh' when Chinese characters outnumber Latin words, else 'en'."""
    return "zh" if len(CJK.findall(text)) >= max(1, len(LATIN_WORD.findall(text))) else "en"
