"""A deterministic backend for tests and demos: canned replies, or an echo of the question.

It goes through the same registry and interface as the real models, so code under test runs the
same wiring as in production. It leaves out anything model-like: no tokenizer (a token is a word
or one CJK character), no sampling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from kb.errors import ConfigError
from kb.llm.base import BackendInfo, ChatBackend, Message, check_messages, not_found, truncate_at_stop
from kb.text.lang import HAN

_TOKEN = re.compile(f"[{HAN}]|[^\\s{HAN}]+")


class ScriptedBackend(ChatBackend):
    """Replies with `replies` in order (then repeats the last), or echoes the last user message."""

    name = "scripted"
    # Canned replies make no rewrite: answer.rewrite auto takes the rule (tests choose "model" to test that path).
    rewrites_queries = False

    def __init__(self, replies: list[str] | None = None, context_window: int = 4096,
                 languages: tuple[str, ...] = ("en",)) -> None:
        self.replies = list(replies or [])
        self.context_window = context_window
        self.languages = tuple(languages)
        self.calls: list[list[Message]] = []

    def _reply(self, messages: list[Message]) -> str:
        if not self.replies:
            return f"You asked: {messages[-1].content}"
        index = min(len(self.calls) - 1, len(self.replies) - 1)
        return self.replies[index]

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        check_messages(messages)
        self.calls.append(list(messages))
        text, _ = truncate_at_stop(self._reply(messages), stop)
        pieces = re.findall(r"\S+\s*|\s+", text)
        if max_new_tokens is not None:
            pieces = pieces[:max_new_tokens]
        yield from pieces

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))


def from_settings(settings) -> ScriptedBackend:
    """`llm.model` may name a JSON file holding a list of replies (or {"replies": [...], "languages": [...]},
    the languages it pretends to write; default English only); empty means echo."""
    if not settings.model:
        return ScriptedBackend(context_window=settings.n_ctx or 4096)
    path = Path(settings.model).expanduser()
    try:
        replies = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"llm.model {settings.model!r} must be a JSON file holding a list of replies for the "
            f"scripted backend ({e}); leave it empty to echo questions"
        ) from e
    languages = ("en",)
    if isinstance(replies, dict):  # {"replies": [...], "languages": ["en", "zh"]}
        languages = tuple(replies.get("languages", languages))
        replies = replies.get("replies")
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
        raise ConfigError(f"{path} must hold a JSON list of strings (the scripted replies), or an object with "
                          "'replies' (that list) and 'languages' (e.g. [\"en\", \"zh\"])")
    return ScriptedBackend(replies, context_window=settings.n_ctx or 4096, languages=languages)


def describe(settings) -> BackendInfo:
    """The scripted backend, built to describe it (it loads instantly: a JSON file of replies at most)."""
    try:
        backend = from_settings(settings)
    except ConfigError as e:
        what, _, fix = str(e).partition("; ")
        return not_found("scripted", what, fix or what)
    return BackendInfo("scripted", True, label="scripted backend", window=backend.context_window,
                       languages=backend.languages)
