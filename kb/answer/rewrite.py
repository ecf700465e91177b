"""History-aware query rewrite: turn a chat follow-up ("and on Windows?") into a standalone search query.

Two ways: ask the model (`answer.rewrite: model`), or a cheap rule that needs no model (`rule`): add
the previous questions' key terms that the follow-up lacks. `auto` asks the model only when the backend
declares its rewrites worth it (ChatBackend.rewrites_queries: not small models such as the embedded
SmolLM2-135M, whose rewrites were worse than the rule's (README), nor the scripted test backend).
A model rewrite that comes back empty or rambling falls back to the rule. Only the search query is
rewritten; the model still answers the user's own words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kb.answer.prompts import rewrite_messages, translate_messages
from kb.config import AnswerSettings
from kb.text.keywords import query_terms
from kb.text.lang import LANGUAGES, has_cjk, language


def rule_rewrite(question: str, history: list[tuple[str, str]], turns: int = 1) -> str:
    """The question plus the key terms of the last `turns` questions that it does not already have.

    A past question in the other language (Chinese vs. not) adds nothing: a user who switches language
    has almost always switched topic, and its terms would pull in the other language's documents."""
    if not history:
        return question
    have = set(query_terms(question))
    chinese = has_cjk(question)
    extra: list[str] = []
    for past, _ in history[-turns:]:
        if has_cjk(past) != chinese:
            continue
        for t in query_terms(past):
            if t not in have and t not in extra and not _covered(t, extra):
                extra.append(t)
    return f"{question} {' '.join(extra)}" if extra else question


def _covered(term: str, kept: list[str]) -> bool:
    # jieba's search mode yields '主从复制' and also '主从'; keep only one of them
    return has_cjk(term) and any(term in k or k in term for k in kept)


def clean_model_rewrite(text: str, question: str) -> str | None:
    """The first non-empty line without labels or quotes; None if it is unusable."""
    for line in text.strip().splitlines():
        line = re.sub(r"^(standalone question|rewritten question|question|问题)\s*[:：]\s*", "", line.strip(),
                      flags=re.I).strip().strip('"“”\'「」')
        if line:
            limit = max(200, 3 * len(question))
            return line if len(line) <= limit else None
    return None


def choose_mode(settings: AnswerSettings, backend) -> str:
    """rule / model / off for this backend (resolving 'auto')."""
    if settings.rewrite != "auto":
        return settings.rewrite
    return "model" if backend is not None and backend.rewrites_queries else "rule"


def rewrite(settings: AnswerSettings, backend, question: str, history: list[tuple[str, str]],
            write: Callable[..., str] | None = None) -> tuple[str, str]:
    """(standalone query, how it was made: none / rule / model / rule-fallback). `write(messages, **gen)` calls the
    model (default: backend.generate; the chain passes its own, which stops with the answer)."""
    if not history:
        return question, "none"
    mode = choose_mode(settings, backend)
    if mode == "off":
        return question, "none"
    if mode == "model":
        reply = (write or backend.generate)(rewrite_messages(settings, question, history), max_new_tokens=64,
                                            temperature=0)
        cleaned = clean_model_rewrite(reply, question)
        if cleaned:
            return cleaned, "model"
        return rule_rewrite(question, history), "rule-fallback"
    return rule_rewrite(question, history), "rule"


def wants_translation(settings: AnswerSettings, backend, lang: str, kb_languages: dict[str, int]) -> bool:
    """Whether to search a translation of a `lang` question too (resolving answer.translate_query: auto)."""
    if settings.translate_query == "off" or backend is None:
        return False
    other = _other(lang)
    if settings.translate_query == "on":
        return True
    return set(LANGUAGES) <= set(getattr(backend, "languages", ())) and kb_languages.get(other, 0) > 0


def translate_query(settings: AnswerSettings, backend, query: str, lang: str,
                    write: Callable[..., str] | None = None) -> str | None:
    """The query in the other language, written by the model (`write` as in rewrite); None when the reply is not a
    translation."""
    target = _other(lang)
    reply = (write or backend.generate)(translate_messages(settings, query, target), max_new_tokens=96, temperature=0)
    cleaned = clean_model_rewrite(reply, query)
    if not cleaned or language(cleaned) != target or cleaned.strip() == query.strip():
        return None
    return cleaned


def _other(lang: str) -> str:
    return "en" if lang == "zh" else "zh"
