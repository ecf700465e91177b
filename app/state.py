"""What the app keeps per server process and per browser session.

Per process (st.cache_resource): one answer service (kb/answer/service.py) per set of settings, which the
CLI and the HTTP server use too: it opens each knowledge base once and answers with the process's one chat
model (sessions take turns on it). Per session (st.session_state): the settings the sidebar changed, the
chosen KB and the chat turns. Writes (ingest, remove) go through a KB object of their own, so a long ingest
never holds the lock of the object that other sessions search and answer with. This module leaves out the
widgets (app/sidebar.py, app/*_page.py).
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from kb import KnowledgeBase, Settings, load_settings
from kb.answer.service import AnswerService
from kb.app.i18n import t

OVERRIDES = "kb_overrides"  # session key: {"llm": {...}, "retrieval": {...}, "answer": {...}}
CURRENT_KB = "kb_current"
TURNS = "kb_turns"


def overrides() -> dict[str, dict[str, Any]]:
    """The settings this session changed in the sidebar (not yet saved)."""
    return st.session_state.setdefault(OVERRIDES, {})


def settings() -> Settings:
    """The effective settings: defaults < config file < KB_* variables < this session's sidebar."""
    return load_settings(**overrides())


def _settings_key(s: Settings) -> str:
    return s.model_dump_json()


@st.cache_resource(max_entries=16, show_spinner=False)
def _service(key: str) -> AnswerService:
    return AnswerService(Settings(**json.loads(key)))


def service(s: Settings | None = None) -> AnswerService:
    """The process's answer service for these settings (shared by the sessions that use them)."""
    return _service(_settings_key(s or settings()))


def open_kb(name: str, s: Settings | None = None) -> KnowledgeBase:
    """The process's KB object for this name and these settings (opened once, shared by sessions)."""
    with st.spinner(t("state.opening")):
        return service(s).kb(name)


def writer(name: str, s: Settings | None = None, create: bool = False) -> KnowledgeBase:
    """A KB object of its own for one write (use it in a `with`); readers keep answering meanwhile."""
    return KnowledgeBase.open(name, settings=s or settings(), create=create)


def kb_names(s: Settings | None = None) -> list[str]:
    return KnowledgeBase.names(s or settings())


def current_kb(s: Settings | None = None) -> str | None:
    """The KB this session works with: the chosen one if it still exists, else settings.kb, else the first."""
    s = s or settings()
    names = kb_names(s)
    chosen = st.session_state.get(CURRENT_KB)
    if chosen in names:
        return chosen
    chosen = s.kb if s.kb in names else (names[0] if names else None)
    st.session_state[CURRENT_KB] = chosen
    return chosen


def turns() -> list:
    """This session's chat turns: kb.answer.types.Turn(question, answer), oldest first."""
    return st.session_state.setdefault(TURNS, [])
