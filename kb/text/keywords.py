"""Terms for the keyword (BM25) index: jieba for Chinese, normalized words for everything else.

The same function turns passages and queries into terms, so both sides agree. SQLite FTS5 stores
the terms (its `porter` tokenizer then stems the English ones) and ranks with its built-in bm25().
Queries also drop question words ("如何", "what") that would otherwise match half the corpus.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata

from kb.text.lang import HAN

_CJK_RUN = re.compile(f"([{HAN}]+)")
_WORD = re.compile(r"[^\W_]+(?:[._'-][^\W_]+)*", re.UNICODE)

STOP_ZH = set(
    "的 了 是 在 和 与 及 或 吗 呢 吧 啊 把 被 让 给 对 从 到 为 以 于 就 都 而 也 还 又 很 这 那 这个 那个 "
    "这些 那些 什么 怎么 怎样 怎么样 如何 哪 哪个 哪些 哪里 为什么 为何 是否 能否 可以 能 会 要 应该 需要 "
    "请问 请 我 你 他 她 它 我们 你们 他们 一个 一种 有 没有 有没有 吗？ 呢？ 如果 时 时候 中 里 上 下 "
    "用 使用 进行 通过 之 其 该 所".split()
)
STOP_EN = set(
    "a an the is are was were be been being am do does did doing have has had i me my we our you your "
    "he she it its they them their this that these those what which who whom whose when where why how "
    "can could should would will shall may might must of in on at to for from by with about as into "
    "and or but if then than so not no yes there here any some all each please tell explain".split()
)

_jieba_lock = threading.Lock()
_jieba = None


def _cut(text: str) -> list[str]:
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba = jieba
    return [w for w in _jieba.cut_for_search(text) if w.strip()]


def terms(text: str) -> list[str]:
    """Lower-cased, width-normalized terms in reading order (Chinese segmented, words kept whole)."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for i, part in enumerate(_CJK_RUN.split(text)):
        if i % 2:  # a run of Chinese characters
            out.extend(_cut(part))
        else:
            out.extend(_WORD.findall(part))
    return out


def index_text(text: str) -> str:
    """The string stored in the FTS5 table for a passage."""
    return " ".join(terms(text))


def query_terms(text: str) -> list[str]:
    """Distinct terms of a query, question words removed (all kept if nothing else is left)."""
    seen: dict[str, None] = {}
    for t in terms(text):
        seen.setdefault(t, None)
    all_terms = list(seen)
    kept = [t for t in all_terms if t not in STOP_ZH and t not in STOP_EN]
    return kept or all_terms


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression: any of the query's terms, each quoted. None when the query has none."""
    qs = query_terms(text)
    if not qs:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in qs)
