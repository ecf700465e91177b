"""Packing an answer's prompt: hits merged into numbered passages, and as many of them as fit the model's window.

Packing is token-exact: the prompt is rendered with the model's chat template and counted with its tokenizer
after each passage is added, so prompt + answer budget never exceeds the window. `answer_mode` decides whether
the model writes the answer or kb quotes the passages (answer.mode). This module leaves out retrieval
(kb/retrieval/retriever.py) and the chain's steps (kb/answer/chain.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kb.answer import prompts
from kb.answer.types import Passage
from kb.config import AnswerSettings
from kb.errors import KBError
from kb.llm.base import ChatBackend, Message
from kb.text.lang import language
from kb.types import Hit

_GAP = 4  # chunks this close (a paragraph break apart) count as touching


def merge_hits(hits: list[Hit], span_text: Callable[[str, int, int], str | None]) -> list[Passage]:
    """One Passage per run of overlapping or touching hits of the same document section, placed where its
    best hit ranked. `span_text(doc_id, start, end)` gives the document text of a merged span."""
    groups: list[list[Hit]] = []
    for h in hits:
        for g in groups:
            if any(o.doc_id == h.doc_id and o.section == h.section and o.page == h.page
                   and h.char_start <= o.char_end + _GAP and o.char_start <= h.char_end + _GAP for o in g):
                g.append(h)
                break
        else:
            groups.append([h])
    out = []
    for g in groups:
        first = g[0]
        if len(g) == 1:
            text, ids = first.text, (first.chunk_id,)
        else:
            ordered = sorted(g, key=lambda h: h.char_start)
            start, end = ordered[0].char_start, max(h.char_end for h in g)
            text = span_text(first.doc_id, start, end) or "\n".join(h.text for h in ordered)
            text = _lead(ordered[0].text, text) + text
            ids = tuple(h.chunk_id for h in ordered)
        out.append(Passage(n=0, path=first.path, title=first.title, section=first.section, page=first.page,
                           text=text, score=max(h.score for h in g), chunk_ids=ids, doc_id=first.doc_id))
    return out


# Budgets for a small model (kb.llm.base.ChatBackend.small, e.g. the embedded SmolLM2-135M), chosen on the dev set's
# English questions (README, Performance): a prompt of its best passages up to 512 tokens gave more right
# keywords and a first token 2.4x sooner than 1024 tokens or the whole window; a short answer leaves it
# less room to wander.
SMALL_ANSWER_TOKENS = 192
SMALL_CONTEXT_TOKENS = 512
ANSWER_TOKENS = 384


def answer_budget(backend: ChatBackend, settings: AnswerSettings) -> tuple[int, int]:
    """(answer tokens, prompt cap in tokens) for this model: the settings where set, else fit to its size."""
    small = backend.small
    answer = settings.answer_tokens or (SMALL_ANSWER_TOKENS if small else ANSWER_TOKENS)
    cap = settings.max_context_tokens
    if cap is None:
        cap = SMALL_CONTEXT_TOKENS + answer if small else 0
    window = backend.context_window
    return answer, min(window, cap) if cap else window


def _lead(chunk: str, span: str) -> str:
    """What a chunk's text holds before its place in the document: the table header that kb repeats in
    each piece of a split table (its offsets point at the rows)."""
    at = chunk.find(span[:40]) if span else -1
    return chunk[:at] if at > 0 else ""


def fit(backend: ChatBackend, settings: AnswerSettings, question: str, candidates: list[Passage],
        history: list[tuple[str, str]], lang: str) -> tuple[list[Passage], list[Passage], list[Message], int]:
    """Choose the passages (best first) and history turns that fit the window minus the answer budget.

    Returns (numbered passages, left-out passages, messages, prompt tokens)."""
    window = backend.context_window
    answer_tokens, cap = answer_budget(backend, settings)
    budget = cap - answer_tokens
    history = trim_history(backend, settings, history)

    def render(ps: list[Passage], hist: list[tuple[str, str]]) -> tuple[list[Message], int]:
        messages = prompts.answer_messages(settings, question, ps, hist, lang)
        return messages, backend.count_message_tokens(messages)

    messages, used = render([], history)
    while used > budget and history:
        history = history[1:]
        messages, used = render([], history)
    if used > budget:
        raise KBError(f"the question alone takes {used} tokens, more than the {budget} the model's window "
                      f"({window}) leaves after answer.answer_tokens={answer_tokens}; shorten it or "
                      "lower answer.answer_tokens")
    chosen: list[Passage] = []
    left_out: list[Passage] = []
    for cand in candidates:
        trial = chosen + [replace(cand, n=len(chosen) + 1)]
        trial_messages, trial_used = render(trial, history)
        if trial_used <= budget:
            chosen = trial[:-1] + [replace(trial[-1], tokens=trial_used - used)]
            messages, used = trial_messages, trial_used
        else:
            left_out.append(cand)
    return chosen, left_out, messages, used


def trim_history(backend: ChatBackend, settings: AnswerSettings,
                 history: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The last answer.history_turns turns, fewer while they take more than answer.history_tokens."""
    kept = list(history[-settings.history_turns:]) if settings.history_turns else []
    while kept and sum(backend.count_tokens(q) + backend.count_tokens(a) + 8
                       for q, a in kept) > settings.history_tokens:
        kept = kept[1:]
    return kept


def answer_mode(settings: AnswerSettings, backend: ChatBackend | None, lang: str,
                candidates: list[Passage]) -> tuple[str, list[Passage]]:
    """('generate' or 'extract', the passages the model can read) for answer.mode (resolving auto).

    auto extracts when there is no chat model, when it cannot write the question's language or read the
    best passage, and when it is a small model (kb.llm.base.ChatBackend.small: on the dev set's English questions
    SmolLM2-135M's answers cited the evidence for 0.26 of them and looped in 0.85, quotes for 0.59); it
    generates otherwise. A model is given only the passages in the languages it reads."""
    if settings.mode == "extract" or backend is None:
        return "extract", candidates
    readable = [p for p in candidates if language(p.text) in backend.languages]
    if settings.mode == "generate":
        return "generate", readable or candidates
    best_readable = bool(candidates) and candidates[0] in readable
    if not auto_generates(lang, backend.languages, backend.small, best_readable):
        return "extract", candidates
    return "generate", readable


def auto_generates(lang: str, languages: tuple[str, ...], small: bool, best_readable: bool = True) -> bool:
    """answer.mode auto's rule, the one answer_mode and kb doctor (kb/doctor/chat.py) apply: the model writes
    an answer to a `lang` question only when it writes `lang`, reads the best passage and is not small."""
    return lang in languages and best_readable and not small
