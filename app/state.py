"""What the app keeps per server process and per browser session.

Per process (st.cache_resource): the chat model (kb's shared backend, so sessions take turns on one
model) and the opened knowledge bases, keyed by name and settings. Per session (st.session_state): the
settings the sidebar changed, the chosen KB and the chat turns. Writes (ingest, remove) go through a
KB object of their own, so a long ingest never holds the lock of the object that other sessions
search and answer with. This module leaves out the widgets (app/sidebar.py, app/*_page.py).
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from kb import KnowledgeBase, Settings, load_settings
from kb.config import LLMSettings
from kb.llm.shared import shared_backend

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


@st.cache_resource(max_entries=16, show_spinner="Opening the knowledge base...")
def _open(name: str, key: str) -> KnowledgeBase:
    return KnowledgeBase.open(name, settings=Settings(**json.loads(key)), create=False)


def open_kb(name: str, s: Settings | None = None) -> KnowledgeBase:
    """The process's KB object for this name and these settings (opened once, shared by sessions)."""
    s = s or settings()
    return _open(name, _settings_key(s))


def writer(name: str, s: Settings | None = None, create: bool = False) -> KnowledgeBase:
    """A KB object of its own for one write (use it in a `with`); readers keep answering meanwhile."""
    return KnowledgeBase.open(name, settings=s or settings(), create=create)


def forget_kbs() -> None:
    """Drop every cached KB object (after a KB is deleted, so none points at a removed folder)."""
    _open.clear()


@st.cache_resource(show_spinner="Loading the model...")
def _backend(key: str):
    return shared_backend(LLMSettings.model_validate_json(key))


def backend(s: Settings | None = None):
    """The process's one chat model for these llm settings, loaded on first use."""
    s = s or settings()
    return _backend(s.llm.model_dump_json())


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
    """This session's chat turns: kb.answer.chat.Turn(question, answer), oldest first."""
    return st.session_state.setdefault(TURNS, [])
