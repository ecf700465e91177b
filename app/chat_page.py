"""The chat page: ask the chosen knowledge base; the answer streams in, then its numbered sources.

Turns are kept in the session (kb.answer.types.Turn); the answer service (kb/answer/service.py) answers, and
sends the model the earlier turns by its one rule, as for `kb chat` and the HTTP API (refused turns left out,
[n] markers removed). "New chat" forgets them.
"""

from __future__ import annotations

import streamlit as st

from kb import Answer
from kb.answer.types import Turn
from kb.app import state
from kb.app.i18n import t
from kb.app.sources import render_sources

# An answer's status -> the i18n key of the note under it.
_STATUS_NOTE = {"refused": "chat.refused", "not_found": "chat.not_found", "general": "chat.general"}


def render() -> None:
    st.title(t("chat.title"))
    s = state.settings()
    name = state.current_kb(s)
    if name is None:
        st.info(t("chat.no_kb"))
        return
    top = st.columns([4, 1])
    top[0].caption(t("chat.caption", name=name, backend=s.llm.backend, mode=s.retrieval.mode))
    if top[1].button(t("chat.new"), icon=":material/add_comment:", key="new_chat"):
        state.turns().clear()
    for i, turn in enumerate(state.turns()):
        _show_turn(turn, i, name)
    question = st.chat_input(t("chat.input"))
    if question:
        _ask(name, s, question)


def _show_turn(turn: Turn, i: int, name: str) -> None:
    with st.chat_message("user"):
        st.text(turn.question)
    with st.chat_message("assistant"):
        st.markdown(turn.answer.text)
        _footer(turn.answer, f"t{i}", name)


def _footer(answer: Answer, key: str, name: str) -> None:
    note = _STATUS_NOTE.get(answer.status)
    if note:
        st.caption(t(note))
    render_sources(answer, key, name)


def _ask(name: str, s, question: str) -> None:
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        stream = state.service(s).answer(state.open_kb(name, s), question, list(state.turns()))
        box = st.empty()
        with box:
            st.write_stream(iter(stream))  # the model loads (once per process) only if the answer needs it
        answer = stream.answer()
        box.markdown(answer.text)  # the verified text: markers that pointed nowhere are gone
        _footer(answer, f"t{len(state.turns())}", name)
        state.turns().append(Turn(question, answer))


if __name__ == "__main__":  # run as a page of app/main.py
    render()
