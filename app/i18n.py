"""The app's words in its user's language: `t(key, **kw)` looks a key up in this session's catalogue.

One catalogue per language, the same keys in each: app/i18n_en.py and app/i18n_zh.py (flat modules of kb.app,
so that they ship without a package of their own). The language is the sidebar's choice for this browser
session; until the user makes one it is `app.language`, where auto is the browser's: the first of Chinese and
English in its Accept-Language header, else the locale it reports (st.context.locale), else English.

Only the app's own words are here. kb's messages (a KBError's text, the reason a file was not read, the answer
and its refusal) come from the library as they are.
"""

from __future__ import annotations

import streamlit as st

from kb import KBError, load_settings
from kb.app.i18n_en import STRINGS as EN
from kb.app.i18n_zh import STRINGS as ZH

CATALOGUES: dict[str, dict[str, str]] = {"zh": ZH, "en": EN}
LANGUAGES: tuple[str, ...] = tuple(CATALOGUES)
NAMES = {"zh": "中文", "en": "English"}  # each in its own language, for the sidebar's switch
DEFAULT = "en"
LANGUAGE = "kb_language"  # session key (the sidebar's switch): "zh" or "en"


def negotiate(accept_language: str | None) -> str | None:
    """'zh' or 'en': the one of the two that an Accept-Language value prefers (by q, then by order; zh-CN,
    zh-TW, zh-Hans... are zh), or None when it names neither. A q of 0 means "not this one"."""
    ranked = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag.lower().split("-")[0]))
    return next((lang for _, _, lang in sorted(ranked) if lang in CATALOGUES), None)


def browser_language() -> str:
    """The language the browser asks for: its Accept-Language header, else its locale, else English."""
    lang = negotiate(st.context.headers.get("Accept-Language"))
    return lang or negotiate(st.context.locale) or DEFAULT


def configured_language() -> str:
    """app.language, with auto resolved to the browser's (a settings error is the sidebar's to show)."""
    try:
        setting = load_settings().app.language
    except KBError:
        setting = "auto"
    return browser_language() if setting == "auto" else setting


def language() -> str:
    """This session's language: the sidebar's choice, first set from the settings and the browser."""
    lang = st.session_state.get(LANGUAGE)
    if lang not in CATALOGUES:
        lang = st.session_state[LANGUAGE] = configured_language()
    return lang


def t(key: str, **kw) -> str:
    """The text of `key` in this session's language, its {placeholders} filled from `kw`."""
    text = CATALOGUES[language()][key]
    return text.format(**kw) if kw else text
