"""The chat page: ask the chosen knowledge base; the answer streams in, then its numbered sources.

Turns are kept in the session (kb.answer.chat.Turn); earlier turns go to the model as history the way
`kb chat` sends them (refused turns left out, [n] markers removed). "New chat" forgets them.
"""

from __future__ import annotations

from collections.abc import Iterator

import streamlit as st

from kb import Answer, ChatSession
from kb.answer.chat import Turn
from kb.answer.loading import LazyBackend
from kb.app import state
from kb.app.sources import render_sources

_STATUS_NOTE = {
    "refused": "Nothing in this knowledge base is relevant enough, so no answer was made up.",
    "not_found": "The passages found do not hold the answer.",
    "general": "General knowledge, not from your documents: no sources.",
}


def render() -> None:
    st.title("Ask your documents")
    s = state.settings()
    name = state.current_kb(s)
    if name is None:
        st.info("There is no knowledge base yet: create one and upload documents on the **Knowledge bases** page.")
        return
    top = st.columns([4, 1])
    top[0].caption(f"Knowledge base: **{name}** · model backend: {s.llm.backend} · mode: {s.retrieval.mode}")
    if top[1].button("New chat", icon=":material/add_comment:", key="new_chat"):
        state.turns().clear()
    for i, turn in enumerate(state.turns()):
        _show_turn(turn, i)
    question = st.chat_input("Ask a question about your documents")
    if question:
        _ask(name, s, question)


def _show_turn(turn: Turn, i: int) -> None:
    with st.chat_message("user"):
        st.text(turn.question)
    with st.chat_message("assistant"):
        st.markdown(turn.answer.text)
        _footer(turn.answer, f"t{i}")


def _footer(answer: Answer, key: str) -> None:
    note = _STATUS_NOTE.get(answer.status)
    if note:
        st.caption(note)
    render_sources(answer, key)


def _ask(name: str, s, question: str) -> None:
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        kb = state.open_kb(name, s)
        history = ChatSession(turns=list(state.turns())).history()
        result: list[Answer] = []
        box = st.empty()
        with box:
            model = LazyBackend(lambda: state.backend(s))  # loaded only if the answer needs the model
            st.write_stream(_text_only(kb.stream(question, history=history, backend=model), result))
        answer = result[0]
        box.markdown(answer.text)  # the verified text: markers that pointed nowhere are gone
        _footer(answer, f"t{len(state.turns())}")
        state.turns().append(Turn(question, answer))


def _text_only(items: Iterator, result: list[Answer]) -> Iterator[str]:
    """The stream's text pieces; the final Answer is put in `result` instead of being written."""
    for item in items:
        if isinstance(item, Answer):
            result.append(item)
        else:
            yield item


if __name__ == "__main__":  # run as a page of app/main.py
    render()
