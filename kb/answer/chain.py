"""The answer chain, as langchain-core runnables (LCEL):
rewrite | retrieve | pack | prompt | generate | verify.

Each step but the last two maps a `State` (a frozen dataclass) to the next one. `generate` streams the model's
text pieces (the backend's own `stream`, the one way kb calls a model: rewrite and translate join it), then a
`Written` state; `verify` passes the pieces on and ends the stream with the `Answer`. So `chain.stream(state)`
yields str pieces, then one Answer; kb/answer/stream.py's AnswerStream hands callers the two apart.

The chain is built with a `Retriever` (kb/retrieval/retriever.py): search, and the passage comparisons refusal and quoting
need. Refusal happens before any model call when no passage passes `retrieval.threshold` / `answer.min_similarity`.
This module leaves out prompt packing (kb/answer/packing.py), the history rule and the model's loading
(kb/answer/service.py) and the prompt texts (kb/answer/prompts.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda

from kb.answer import prompts
from kb.answer.citations import verify
from kb.answer.extract import extract
from kb.answer.loop_guard import LoopGuard, guarded
from kb.answer.packing import answer_budget, answer_mode, fit, merge_hits, trim_history
from kb.answer.rewrite import rewrite, translate_query, wants_translation
from kb.answer.types import Answer, Citation, Passage, Timings
from kb.config import AnswerSettings
from kb.errors import KBError, NoChatModelError
from kb.llm.base import ChatBackend, Message
from kb.retrieval.retriever import DEFAULT, Retriever, SearchOptions
from kb.text.lang import language
from kb.types import Hit


@dataclass(frozen=True)
class State:
    """What the chain knows about one question so far; each step returns a copy with its part filled in."""

    question: str
    history: tuple[tuple[str, str], ...]
    t0: float  # perf_counter at the chain's start
    timings: Timings = field(default_factory=Timings)
    lang: str = "en"  # the question's language
    query: str = ""  # what is searched: the question, or a follow-up rewritten to stand alone
    translation: str | None = None  # the query in the other language, also searched
    hits: tuple[Hit, ...] = ()
    grounded: bool = False  # some passage passed the refusal checks
    passages: tuple[Passage, ...] = ()  # numbered, in the prompt (or quoted)
    left_out: tuple[Passage, ...] = ()
    messages: tuple[Message, ...] = ()  # the prompt, when a model is asked
    prompt_tokens: int = 0
    how: Literal["generate", "extract"] = "generate"  # the model writes the answer, or kb quotes the passages
    mode: Literal["answer", "general", "refuse"] = "answer"
    stop: threading.Event | None = field(default=None, compare=False)  # set: the model stops after its piece
    sampling: tuple[tuple[str, Any], ...] = ()  # the caller's temperature / top_p / max_new_tokens, where given


@dataclass(frozen=True)
class Written:
    """A State with its answer written: the text, and for a quoted answer its citations."""

    state: State
    text: str
    citations: tuple[Citation, ...] = ()
    repeated: bool = False  # the loop guard stopped the model where it began to repeat itself


def build_chain(retriever: Retriever, backend: Callable[[], ChatBackend] | None, settings: AnswerSettings,
                options: SearchOptions = DEFAULT) -> Runnable:
    """The LCEL chain for one retriever and a model: `backend()` gives it, called only when first needed, so
    that a model loading in the background overlaps with the steps before (None: no chat model, answers are
    extracted). Input: a State. With answer.mode extract the model is never asked for (not loaded)."""
    chosen: list[ChatBackend | None] = []

    def model() -> ChatBackend | None:
        """The backend, or None where answers are extracted without one."""
        if not chosen:
            usable = None
            if settings.mode != "extract" and backend is not None:
                try:
                    usable = backend()  # waits for a model that is loading
                except NoChatModelError:  # kb without its local extra: quote instead
                    if settings.mode != "auto":
                        raise
            chosen.append(usable)
        return chosen[0]

    def write(s: State) -> Callable[..., str]:
        """The model's whole reply to a rewrite or translate prompt, called as the answer is (`_pieces`)."""
        return lambda messages, **gen: "".join(_pieces(model(), messages, s.stop, **gen))

    def step(name: str, fn) -> RunnableLambda:
        """A timed step: its seconds go to the Timings field of its name."""
        def run(state: State) -> State:
            start = time.perf_counter()
            out = fn(state)
            return replace(out, timings=replace(out.timings, **{name: time.perf_counter() - start}))
        return RunnableLambda(run, name=name)

    def do_rewrite(s: State) -> State:
        query, _ = rewrite(settings, model() if s.history else None, s.question, list(s.history), write(s))
        return replace(s, query=query, lang=language(s.question))

    def do_retrieve(s: State) -> State:
        translation = None
        if wants_translation(settings, model(), s.lang, retriever.languages()):
            translation = translate_query(settings, model(), s.query, s.lang, write(s))
        hits = retriever.search(s.query, None, options, also=[translation] if translation else ())
        return replace(s, hits=tuple(hits), translation=translation,
                       grounded=_passes_checks(retriever, settings, s.query, hits))

    def do_pack(s: State) -> State:
        if not s.grounded:
            return s
        candidates = merge_hits(list(s.hits), retriever.span_text)
        how, readable = answer_mode(settings, model(), s.lang, candidates)
        if how == "extract":
            return replace(s, how=how, passages=tuple(replace(p, n=i) for i, p in enumerate(candidates, 1)))
        passages, left, messages, used = fit(model(), settings, s.question, readable, list(s.history), s.lang)
        left += [p for p in candidates if p not in readable]
        return replace(s, how=how, passages=tuple(passages), left_out=tuple(left), messages=tuple(messages),
                       prompt_tokens=used)

    def do_prompt(s: State) -> State:
        if s.grounded and s.passages:
            return replace(s, mode="answer")
        if settings.no_sources == "general" and model() is not None:
            messages = prompts.general_messages(settings, s.question,
                                                trim_history(model(), settings, list(s.history)))
            return replace(s, mode="general", messages=tuple(messages), how="generate",
                           prompt_tokens=model().count_message_tokens(messages))
        return replace(s, mode="refuse", messages=())

    def generate(inputs: Iterator[State]) -> Iterator[str | Written]:
        for s in inputs:
            if s.mode == "answer" and s.how == "extract":
                yield from _extract(retriever, s)
            else:
                yield from _generate(model(), settings, s)

    def finish(items: Iterator[str | Written]) -> Iterator[str | Answer]:
        for item in items:
            yield _to_answer(item, model() if chosen else None) if isinstance(item, Written) else item

    return (step("rewrite", do_rewrite) | step("retrieve", do_retrieve) | step("pack", do_pack)
            | RunnableLambda(do_prompt, name="prompt") | RunnableGenerator(generate, name="generate")
            | RunnableGenerator(finish, name="verify"))


def _passes_checks(retriever: Retriever, settings: AnswerSettings, query: str, hits: list[Hit]) -> bool:
    """Some passage was found (search dropped those under retrieval.threshold), and (where the embedder reads the
    query) some passage reaches its refusal similarity: answer.min_similarity (raw cosine), or unset, the embedder's
    calibrated value for the pair of the query's language and the passage's (kb.ingest.embed.REFUSAL_SIMILARITY):
    raw cosine within a language, the KB's language-centred cosine across languages, so that a question whose
    answer is in the other language's documents is answered."""
    if not hits:
        return False
    lang = language(query)
    passage_langs = {h.chunk_id: language(h.text) for h in hits}
    floors = dict.fromkeys(passage_langs, 0.0)  # the raw cosine a passage must reach besides its threshold
    if settings.min_similarity is not None:
        limits = {cid: (settings.min_similarity, 0) for cid in passage_langs}  # (threshold, 0: raw / 1: centred)
    else:
        limits = {cid: (retriever.refusal_similarity(lang, p), int(p != lang)) for cid, p in passage_langs.items()}
        floors = {cid: retriever.refusal_floor(lang, p) if p != lang else 0.0 for cid, p in passage_langs.items()}
    if any(t <= 0 for t, _ in limits.values()):
        return True
    sims = retriever.passage_similarities(query, passage_langs)
    return sims is None or any(sims[cid][space] >= t and sims[cid][0] >= floors[cid]
                               for cid, (t, space) in limits.items() if cid in sims)


def _extract(retriever: Retriever, s: State) -> Iterator[str | Written]:
    """The extractive answer (kb/answer/extract.py), streamed line by line, then the written state."""
    start = time.perf_counter()
    text, citations = extract(s.question, list(s.passages), s.lang, lambda texts: retriever.similarity(s.query, texts),
                              retriever.term_rarity)
    first = None
    for line in text.splitlines(keepends=True):
        first = first if first is not None else time.perf_counter() - s.t0
        yield line
    timings = replace(s.timings, first_token=first, generate=time.perf_counter() - start)
    yield Written(replace(s, timings=timings), text, tuple(citations))


def _generate(backend: ChatBackend | None, settings: AnswerSettings, s: State) -> Iterator[str | Written]:
    """Stream the model's answer through the loop guard, then yield the written state."""
    start = time.perf_counter()
    first = prefill = None
    repeated = False
    pieces: list[str] = []
    if s.mode == "refuse":
        pieces.append(prompts.REFUSAL[s.lang])
        yield pieces[0]
    else:
        if s.mode == "general":
            pieces.append(prompts.GENERAL_LABEL[s.lang])
            yield pieces[0]
        guard = LoopGuard()
        gen = dict(s.sampling)
        budget = answer_budget(backend, settings)[0]  # the prompt was packed to leave this much room
        gen["max_new_tokens"] = min(budget, gen.get("max_new_tokens") or budget)

        def text() -> Iterator[str]:
            nonlocal prefill
            for piece in _pieces(backend, list(s.messages), s.stop, **gen):
                if prefill is None and piece:
                    prefill = time.perf_counter() - start
                yield piece

        for shown in guarded(text(), guard):  # stops the model where it starts repeating itself
            first = first if first is not None else time.perf_counter() - s.t0
            pieces.append(shown)
            yield shown
        repeated = guard.stopped
    timings = replace(s.timings, first_token=first, prefill=prefill, generate=time.perf_counter() - start)
    yield Written(replace(s, timings=timings), "".join(pieces), repeated=repeated)


def _pieces(backend: ChatBackend, messages: list[Message], stop: threading.Event | None, **gen) -> Iterator[str]:
    """The one way the chain calls a model (answer, rewrite, translate): its stream, ended after the current piece
    once `stop` is set (or never begun, if `stop` is set while it waits for a shared model); closing the stream
    frees a shared model for the next caller."""
    stream = backend.stream(messages, **gen) if stop is None else backend.stream_in_turn(messages, stop, **gen)
    try:
        if stop is not None and stop.is_set():
            return
        for piece in stream:
            yield piece
            if stop is not None and stop.is_set():
                return
    finally:
        stream.close()


def _to_answer(w: Written, backend: ChatBackend | None) -> Answer:
    s = w.state
    timings = replace(s.timings, total=time.perf_counter() - s.t0)
    generated = backend is not None and s.mode != "refuse" and s.how == "generate"
    common: dict[str, Any] = dict(
        question=s.question, query=s.query, translation=s.translation, passages=s.passages, left_out=s.left_out,
        language=s.lang, backend=backend.name if generated else "", prompt_tokens=s.prompt_tokens, timings=timings,
        repetition_stopped=w.repeated)
    if s.mode == "refuse":
        return Answer(text=w.text, status="refused", **common)
    if s.how == "extract" and s.mode == "answer":
        status = "answered" if w.citations else "not_found"
        return Answer(text=w.text or prompts.NOT_FOUND[s.lang], status=status, citations=w.citations,
                      answer_mode="extract", **common)
    if s.mode == "general":
        return Answer(text=w.text.strip(), status="general", **common)
    checked = verify(w.text, list(s.passages))
    status = "not_found" if prompts.says_not_found(checked.text) else "answered"
    return Answer(text=checked.text, status=status, citations=checked.citations,
                  unsupported=() if status == "not_found" else checked.unsupported,
                  dropped_markers=checked.dropped, **common)


def stream_answer(retriever: Retriever, backend: Callable[[], ChatBackend] | None, settings: AnswerSettings,
                  question: str, history: list[tuple[str, str]] | None = None, options: SearchOptions = DEFAULT,
                  config: dict | None = None, *, t0: float | None = None, stop: threading.Event | None = None,
                  sampling: dict[str, Any] | None = None) -> Iterator[str | Answer]:
    """Run the chain: text pieces, then the Answer. `history` is what the model may see of earlier turns
    (kb.answer.service.model_history's rule); the Answer's times count from `t0` (perf_counter; default now);
    `stop` ends the model's stream after its current piece; `sampling` holds a call's temperature, top_p and
    max_new_tokens (max_new_tokens can only shorten the answer)."""
    if not question or not question.strip():
        raise KBError("the question is empty")
    chain = build_chain(retriever, backend, settings, options)
    given = tuple((k, v) for k, v in (sampling or {}).items() if v is not None)
    state = State(question=question.strip(), history=tuple(history or ()),
                  t0=time.perf_counter() if t0 is None else t0, stop=stop, sampling=given)
    yield from chain.stream(state, config=config)
