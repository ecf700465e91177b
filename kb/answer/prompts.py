"""Every prompt kb sends to a model, in one place: the packaged texts in kb/answer/prompts/*.txt, each of which
`answer.*_prompt` settings can replace (with text, or the path of a .txt file).

Also here: the question's language (zh or en, which picks the prompt and the refusal wording), how a
numbered passage is written into the prompt, and the fixed sentences kb itself says (refusal,
general-knowledge label). It leaves out token budgeting (kb/answer/packing.py).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from kb.answer.types import Passage
from kb.config import AnswerSettings
from kb.errors import ConfigError
from kb.llm import Message
from kb.types import format_location

_PACKAGED = Path(__file__).with_name("prompts")

NOT_FOUND = {"en": "The passages do not contain the answer.", "zh": "资料中没有找到答案。"}
REFUSAL = {
    "en": "No passage in the knowledge base is relevant enough to answer this question, so kb does not "
          "answer it (set answer.no_sources: general to let the model answer from general knowledge).",
    "zh": "知识库中没有与这个问题足够相关的资料，因此不作回答（如需模型凭通用知识回答，请设置 answer.no_sources: general）。",
}
GENERAL_LABEL = {
    "en": "[General knowledge - not from your documents] ",
    "zh": "【通用知识，非来自你的文档】",
}
_LABELS = {"en": ("Passages", "Question", "p. {}"), "zh": ("资料", "问题", "第{}页")}


@lru_cache(maxsize=32)
def _read(name: str) -> str:
    return (_PACKAGED / name).read_text(encoding="utf-8").strip()


def prompt_text(settings: AnswerSettings, key: str, packaged: str) -> str:
    """The configured prompt `key` (text or a .txt path), else the packaged file."""
    value = getattr(settings, key)
    if not value:
        return _read(packaged)
    if value.endswith(".txt"):
        path = Path(value).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"answer.{key} names {path}, which cannot be read ({e.strerror or e})") from e
    return value


def system_prompt(settings: AnswerSettings, lang: str) -> str:
    return prompt_text(settings, f"system_prompt_{lang}", f"system_{lang}.txt")


def passage_block(p: Passage, lang: str) -> str:
    """'[n] file.md, p. 2, § Section' then the passage text."""
    where = format_location(Path(p.path).name, p.page, p.section, page_label=_LABELS[lang][2])
    return f"[{p.n}] {where}\n{p.text.strip()}"


def answer_messages(settings: AnswerSettings, question: str, passages: list[Passage],
                    history: list[tuple[str, str]], lang: str) -> list[Message]:
    """System instructions, past turns, then the passages and the question in one user turn."""
    passages_word, question_word, _ = _LABELS[lang]
    body = "\n\n".join(passage_block(p, lang) for p in passages)
    messages = [Message("system", system_prompt(settings, lang))]
    for q, a in history:
        messages += [Message("user", q), Message("assistant", a)]
    messages.append(Message("user", f"{passages_word}:\n\n{body}\n\n{question_word}: {question}"))
    return messages


def rewrite_messages(settings: AnswerSettings, question: str, history: list[tuple[str, str]]) -> list[Message]:
    """Ask the model for a standalone version of a follow-up question."""
    lines = []
    for q, a in history:
        lines += [f"User: {q}", f"Assistant: {a[:300]}"]
    convo = "\n".join(lines)
    return [Message("system", prompt_text(settings, "rewrite_prompt", "rewrite.txt")),
            Message("user", f"Conversation:\n{convo}\n\nLast question: {question}\n\nStandalone question:")]


_TARGET = {"en": "English", "zh": "Simplified Chinese (简体中文)"}


def translate_messages(settings: AnswerSettings, question: str, target: str) -> list[Message]:
    """Ask the model to translate a search question into `target` ('en' or 'zh')."""
    system = prompt_text(settings, "translate_prompt", "translate.txt").replace("{target}", _TARGET[target])
    return [Message("system", system), Message("user", question)]


def general_messages(settings: AnswerSettings, question: str, history: list[tuple[str, str]]) -> list[Message]:
    messages = [Message("system", prompt_text(settings, "general_prompt", "general.txt"))]
    for q, a in history:
        messages += [Message("user", q), Message("assistant", a)]
    return messages + [Message("user", question)]


def says_not_found(text: str) -> bool:
    """Whether the model's reply is (mostly) the fixed 'no answer in the passages' sentence."""
    flat = re.sub(r"[\s\[\]\d。.]", "", text).lower()
    return any(re.sub(r"[\s。.]", "", s).lower() in flat and len(flat) < 2 * len(s) for s in NOT_FOUND.values())


def not_from_documents(text: str) -> bool:
    """Whether an answer text is one kb gives when the documents did not answer: the refusal, the 'not found'
    sentence, or a labelled general-knowledge answer (for history that arrives as text, e.g. over HTTP)."""
    start = text.strip()
    return (any(start.startswith(r) for r in REFUSAL.values()) or says_not_found(start)
            or any(start.startswith(label.strip()) for label in GENERAL_LABEL.values()))
