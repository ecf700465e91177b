"""A multi-turn conversation with a knowledge base: `session = kb.chat(); session.ask("...")`.

The session keeps the turns (question and Answer); each new question is rewritten into a standalone
query from the recent turns before retrieval (kb/answer/rewrite.py), and the recent turns go into the prompt
within `answer.history_turns` / `answer.history_tokens`. Refused turns are kept in the session but
not sent to the model. It leaves out saving sessions to disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kb.answer.citations import MARKER
from kb.answer.types import Answer


@dataclass(frozen=True)
class Turn:
    question: str
    answer: Answer


@dataclass
class ChatSession:
    """History of one conversation; bind it to a KB with `kb.chat(session)`."""

    turns: list[Turn] = field(default_factory=list)
    kb: Any = None
    search: dict[str, Any] = field(default_factory=dict)  # filters for every turn (paths, file_types, ...)
    backend: Any = None  # the model to answer with (default: the KB's own, settings.llm)

    def history(self) -> list[tuple[str, str]]:
        """(question, answer text) of the turns the model should see, oldest first. Markers are removed:
        their numbers referred to that turn's passages, not to the next one's."""
        return [(t.question, MARKER.sub("", t.answer.text).strip()) for t in self.turns
                if t.answer.status == "answered"]

    def stream(self, question: str) -> Iterator[str | Answer]:
        """Text pieces, then the Answer; the turn is recorded once the Answer is complete."""
        if self.kb is None:
            raise RuntimeError("this session is not bound to a knowledge base; use kb.chat(session)")
        for item in self.kb.stream(question, history=self.history(), backend=self.backend, **self.search):
            if isinstance(item, Answer):
                self.turns.append(Turn(question, item))
            yield item

    def ask(self, question: str) -> Answer:
        answer = None
        for item in self.stream(question):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return answer

    def clear(self) -> None:
        self.turns.clear()
