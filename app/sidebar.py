"""The settings sidebar: the app's language, which KB, which model backend (and its options), and how to
retrieve.

Widgets start from the effective settings (config file and KB_* variables); what the user changes is
kept for this browser session only (app/state.py) until "Save settings" writes it to the config file
with kb.config.save_settings (only the values that differ from kb's defaults). The language switch is kept
for the session only (app/i18n.py); app.language in the config file sets where it starts.
"""

from __future__ import annotations

from typing import get_args

import streamlit as st

from kb import KBError, Settings, load_settings
from kb.app import i18n, state
from kb.app.i18n import t
from kb.config import ANSWER_MODES, RETRIEVAL_MODES, config_path, save_settings
from kb.config.llm import TransformersSettings
from kb.llm import backend_names
from kb.llm.base import model_form

QUANTIZE = list(get_args(TransformersSettings.model_fields["quantize"].annotation))


def render() -> None:
    """Draw the sidebar and store this session's settings overrides."""
    with st.sidebar:
        _language()
        try:
            base = load_settings()
        except KBError as e:
            st.error(str(e))
            return
        names = state.kb_names(base)
        if names:
            state.current_kb()
            st.selectbox(t("sidebar.kb"), names, key=state.CURRENT_KB)
        st.header(t("sidebar.settings"))
        llm = _model(base)
        retrieval, answer = _retrieval(base)
        st.session_state[state.OVERRIDES] = {"llm": llm, "retrieval": retrieval, "answer": answer}
        if st.button(t("sidebar.save"), key="save_settings", help=t("sidebar.save_help", path=config_path())):
            path = save_settings(state.settings())
            st.success(t("sidebar.saved", path=path))


def _language() -> None:
    """The language switch: starts at app.language (auto: the browser's), then the session keeps the choice."""
    i18n.language()  # sets the session key before the widget that owns it is drawn
    st.segmented_control(t("sidebar.language"), list(i18n.LANGUAGES), format_func=i18n.NAMES.__getitem__,
                         required=True, key=i18n.LANGUAGE, help=t("sidebar.language_help"))


def _choice(label: str, options: list[str], value: str, key: str, **kw) -> str:
    options = options if value in options else [*options, value]
    return st.selectbox(label, options, index=options.index(value), key=key, **kw)


def _model(base: Settings) -> dict:
    cur = base.llm
    out: dict = {}
    backend = _choice(t("sidebar.backend"), ["auto", *backend_names()], cur.backend, "set_backend",
                      help=t("sidebar.backend_help"))
    out["backend"] = backend
    form = model_form(backend)
    if form == "folder":
        out["model"] = st.text_input(t("sidebar.model_folder"), cur.model, key="set_model",
                                     help=t("sidebar.model_folder_help"))
        quantize = _choice(t("sidebar.quantize"), QUANTIZE, cur.transformers.quantize, "set_quantize",
                           help=t("sidebar.quantize_help"))
        out["transformers"] = {"quantize": quantize}
    elif form == "server":
        url = st.text_input(t("sidebar.server_url"), cur.openai.base_url, key="set_base_url",
                            placeholder="http://localhost:8000/v1")
        out["model"] = st.text_input(t("sidebar.model_name"), cur.model, key="set_model")
        key = st.text_input(t("sidebar.api_key"), cur.openai.api_key, key="set_api_key", type="password")
        out["openai"] = {"base_url": url, "api_key": key}
    else:
        out["model"] = st.text_input(t("sidebar.model_file"), cur.model, key="set_model",
                                     help=t("sidebar.model_file_help"))
    out["adapter"] = st.text_input(t("sidebar.adapter"), cur.adapter, key="set_adapter",
                                   help=t("sidebar.adapter_help"))
    return out


def _retrieval(base: Settings) -> tuple[dict, dict]:
    r, a = base.retrieval, base.answer
    k = st.slider(t("sidebar.k"), 1, 20, min(max(r.k, 1), 20), key="set_k", help=t("sidebar.k_help"))
    threshold = st.slider(t("sidebar.threshold"), 0.0, 1.0, float(r.threshold), 0.05, key="set_threshold",
                          help=t("sidebar.threshold_help"))
    mode = _choice(t("sidebar.mode"), list(RETRIEVAL_MODES), r.mode, "set_mode", help=t("sidebar.mode_help"))
    rerank = st.toggle(t("sidebar.rerank"), bool(r.reranker), key="set_rerank", help=t("sidebar.rerank_help"))
    reranker = ""
    if rerank:
        reranker = st.text_input(t("sidebar.reranker"), r.reranker or "BAAI/bge-reranker-base", key="set_reranker",
                                 help=t("sidebar.reranker_help"))
    answer_mode = _choice(t("sidebar.answers"), list(ANSWER_MODES), a.mode, "set_answer_mode",
                          help=t("sidebar.answers_help"))
    return {"k": k, "threshold": threshold, "mode": mode, "reranker": reranker}, {"mode": answer_mode}
