"""The settings sidebar: which KB, which model backend (and its options), and how to retrieve.

Widgets start from the effective settings (config file and KB_* variables); what the user changes is
kept for this browser session only (app/state.py) until "Save settings" writes it to the config file
with kb.config.save_settings (only the values that differ from kb's defaults).
"""

from __future__ import annotations

from typing import get_args

import streamlit as st

from kb import KBError, Settings, load_settings
from kb.app import state
from kb.config import ANSWER_MODES, RETRIEVAL_MODES, config_path, save_settings
from kb.config.llm import TransformersSettings
from kb.llm import backend_names
from kb.llm.base import model_form

QUANTIZE = list(get_args(TransformersSettings.model_fields["quantize"].annotation))


def render() -> None:
    """Draw the sidebar and store this session's settings overrides."""
    with st.sidebar:
        try:
            base = load_settings()
        except KBError as e:
            st.error(str(e))
            return
        names = state.kb_names(base)
        if names:
            state.current_kb()
            st.selectbox("Knowledge base", names, key=state.CURRENT_KB)
        st.header("Settings")
        llm = _model(base)
        retrieval, answer = _retrieval(base)
        st.session_state[state.OVERRIDES] = {"llm": llm, "retrieval": retrieval, "answer": answer}
        if st.button("Save settings", key="save_settings", help=f"Writes the changed values to {config_path()}"):
            path = save_settings(state.settings())
            st.success(f"Saved to {path}")


def _choice(label: str, options: list[str], value: str, key: str, **kw) -> str:
    options = options if value in options else [*options, value]
    return st.selectbox(label, options, index=options.index(value), key=key, **kw)


def _model(base: Settings) -> dict:
    cur = base.llm
    out: dict = {}
    backend = _choice("Model backend", ["auto", *backend_names()], cur.backend, "set_backend",
                      help="auto picks from the model path / URL; gguf is the embedded SmolLM2 default.")
    out["backend"] = backend
    form = model_form(backend)
    if form == "folder":
        out["model"] = st.text_input("Model folder", cur.model, key="set_model",
                                     help="A THUDM ChatGLM2 folder (chatglm2) or a Hugging Face model folder.")
        quantize = _choice("Quantization (CUDA)", QUANTIZE, cur.transformers.quantize, "set_quantize",
                           help="4 = NF4, 8 = int8 with bitsandbytes; needs an NVIDIA GPU.")
        out["transformers"] = {"quantize": quantize}
    elif form == "server":
        url = st.text_input("Server URL", cur.openai.base_url, key="set_base_url",
                            placeholder="http://localhost:8000/v1")
        out["model"] = st.text_input("Model name", cur.model, key="set_model")
        key = st.text_input("API key", cur.openai.api_key, key="set_api_key", type="password")
        out["openai"] = {"base_url": url, "api_key": key}
    else:
        out["model"] = st.text_input("Model file", cur.model, key="set_model",
                                     help="A GGUF file (gguf); empty = the embedded SmolLM2. scripted: a JSON "
                                     "list of replies.")
    out["adapter"] = st.text_input("Fine-tune adapter (llm.adapter)", cur.adapter, key="set_adapter",
                                   help="Folder of a LoRA / prefix adapter from `kb finetune`; empty = none.")
    return out


def _retrieval(base: Settings) -> tuple[dict, dict]:
    r, a = base.retrieval, base.answer
    k = st.slider("Top-k passages", 1, 20, min(max(r.k, 1), 20), key="set_k",
                  help="Passages retrieved for an answer (and for a search).")
    threshold = st.slider("Score threshold", 0.0, 1.0, float(r.threshold), 0.05, key="set_threshold",
                          help="Drop passages whose relevance score (0..1) is lower.")
    mode = _choice("Retrieval mode", list(RETRIEVAL_MODES), r.mode, "set_mode",
                   help="hybrid fuses dense vectors and keyword (BM25) search.")
    rerank = st.toggle("Rerank", bool(r.reranker), key="set_rerank",
                       help="Re-score the candidates with a cross-encoder (slower, often better).")
    reranker = ""
    if rerank:
        reranker = st.text_input("Reranker model", r.reranker or "BAAI/bge-reranker-base", key="set_reranker",
                                 help="A sentence-transformers CrossEncoder name or local folder.")
    answer_mode = _choice("Answers", list(ANSWER_MODES), a.mode, "set_answer_mode",
                          help="generate: the chat model writes the answer from the passages; extract: quote the "
                          "passages' sentences that answer (no model, instant); auto: extract when the model "
                          "cannot write the question's language (the embedded SmolLM2 writes only English).")
    return {"k": k, "threshold": threshold, "mode": mode, "reranker": reranker}, {"mode": answer_mode}
