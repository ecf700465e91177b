"""A multi-turn conversation with a knowledge base, and the rule for what a model sees of earlier turns.

`session = kb.chat(); session.ask("...")` keeps the turns (question and Answer); each new question is rewritten
into a standalone query from the recent turns before retrieval (kb/answer/rewrite.py), and the recent turns go
into the prompt within `answer.history_turns` / `answer.history_tokens`. What of a turn the model sees is
`model_history`'s rule, applied wherever an answer starts (kb/answer/loading.py), so the CLI, the app, the HTTP
routes and the Python API send the same history. It leaves out saving sessions to disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kb.answer.citations import MARKER
from kb.answer.prompts import not_from_documents
from kb.answer.stream import AnswerStream
from kb.answer.types import Answer, Turn

__all__ = ["ChatSession", "Turn", "model_history"]


def model_history(turns: Iterable[Turn | tuple[str, Answer | str]]) -> list[tuple[str, str]]:
    """(question, answer text) of the earlier turns the model should see, oldest first.

    A turn is a Turn, or a (question, Answer) or (question, answer text) pair, as a client keeps it. Turns
    that did not answer from the documents (refused, not found, general knowledge) are left out: the model
    would copy a refusal. [n] markers are removed: their numbers referred to that turn's passages, not to the
    next one's."""
    seen = []
    for turn in turns:
        question, answer = (turn.question, turn.answer) if isinstance(turn, Turn) else turn
        if isinstance(answer, Answer):
            if answer.status != "answered":
                continue
            answer = answer.text
        elif not_from_documents(answer):
            continue
        seen.append((question, MARKER.sub("", answer).strip()))
    return seen


@dataclass
class ChatSession:
    """History of one conversation; bind it to a KB with `kb.chat(session)`."""

    turns: list[Turn] = field(default_factory=list)
    kb: Any = None
    search: dict[str, Any] = field(default_factory=dict)  # filters for every turn (paths, file_types, ...)
    backend: Any = None  # the model to answer with (default: the KB's own, settings.llm)

    def history(self) -> list[tuple[str, str]]:
        """What the model sees of the turns so far (model_history)."""
        return model_history(self.turns)

    def stream(self, question: str) -> AnswerStream:
        """The answer's stream; the turn is recorded once its Answer is complete."""
        if self.kb is None:
            raise RuntimeError("this session is not bound to a knowledge base; use kb.chat(session)")
        stream = self.kb.stream(question, history=self.turns, backend=self.backend, **self.search)
        return stream.on_done(lambda answer: self.turns.append(Turn(question, answer)))

    def ask(self, question: str) -> Answer:
        answer = self.stream(question).answer()
        assert answer is not None
        return answer

    def clear(self) -> None:
        self.turns.clear()
