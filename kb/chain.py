"""The answer chain, as langchain-core runnables (LCEL):
rewrite | retrieve | pack | prompt | generate | verify.

Each step but the last two maps a state dict to a new one. `generate` streams the model's text
pieces (through the LangChain adapter of the kb backend), `verify` passes them on and ends the
stream with the `Answer`. So `chain.stream(inputs)` yields str pieces, then one Answer.

Packing is token-exact: the prompt is rendered with the model's chat template and counted with its
tokenizer after each passage is added, so prompt + answer budget never exceeds the window.
Refusal happens before any model call when no passage passes `answer.min_score` /
`answer.min_similarity`. This module leaves out history storage (kb/chat.py) and the prompt texts
(kb/prompts.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda

from kb import prompts
from kb.answer import Answer, Passage, Timings
from kb.citations import verify
from kb.config import AnswerSettings
from kb.errors import KBError, NoChatModelError
from kb.extract import extract
from kb.lang import language
from kb.llm.base import is_small
from kb.llm.langchain_adapter import as_chat_model
from kb.loop_guard import LoopGuard, guarded
from kb.rewrite import rewrite, translate_query, wants_translation
from kb.types import Hit

_GAP = 4  # chunks this close (a paragraph break apart) count as touching
_LC = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


def merge_hits(hits: list[Hit], span_text) -> list[Passage]:
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


# Budgets for a small model (kb.llm.base.is_small, e.g. the embedded SmolLM2-135M), chosen on the dev set's
# English questions (README, Performance): a prompt of its best passages up to 512 tokens gave more right
# keywords and a first token 2.4x sooner than 1024 tokens or the whole window; a short answer leaves it
# less room to wander.
SMALL_ANSWER_TOKENS = 192
SMALL_CONTEXT_TOKENS = 512
ANSWER_TOKENS = 384


def answer_budget(backend, settings: AnswerSettings) -> tuple[int, int]:
    """(answer tokens, prompt cap in tokens) for this model: the settings where set, else fit to its size."""
    small = is_small(backend)
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


def fit(backend, settings: AnswerSettings, question: str, candidates: list[Passage],
        history: list[tuple[str, str]], lang: str) -> tuple[list[Passage], list[Passage], list, int]:
    """Choose the passages (best first) and history turns that fit the window minus the answer budget.

    Returns (numbered passages, left-out passages, messages, prompt tokens)."""
    window = backend.context_window
    answer_tokens, cap = answer_budget(backend, settings)
    budget = cap - answer_tokens
    history = _trim_history(backend, settings, history)

    def render(ps: list[Passage], hist) -> tuple[list, int]:
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


def _trim_history(backend, settings: AnswerSettings, history: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = list(history[-settings.history_turns:]) if settings.history_turns else []
    while kept and sum(backend.count_tokens(q) + backend.count_tokens(a) + 8 for q, a in kept) > settings.history_tokens:
        kept = kept[1:]
    return kept


def build_chain(kb, backend, settings: AnswerSettings, search: dict[str, Any] | None = None) -> Runnable:
    """The LCEL chain for one knowledge base and backend (None: no chat model, answers are extracted).
    Input: {"question", "history"}. With answer.mode extract the backend is never touched (not loaded)."""
    search = dict(search or {})
    chosen: list = []

    def model():
        """The backend, or None where answers are extracted without one (asked only when first needed,
        so that a model loading in the background overlaps with the steps before)."""
        if not chosen:
            usable = None if settings.mode == "extract" else backend
            if usable is not None and settings.mode == "auto":
                try:
                    _ = usable.languages  # waits for a model that is loading
                except NoChatModelError:  # kb without its local extra: quote instead
                    usable = None
            chosen.append(usable)
        return chosen[0]

    def step(name: str, fn) -> RunnableLambda:
        def run(state: dict) -> dict:
            start = time.perf_counter()
            out = {**state, **fn(state)}
            out["timings"] = {**state["timings"], name: time.perf_counter() - start}
            return out
        return RunnableLambda(run, name=name)

    def do_rewrite(s: dict) -> dict:
        lang = language(s["question"])
        query, how = rewrite(settings, model() if s["history"] else None, s["question"], s["history"])
        return {"query": query, "rewrite_mode": how, "lang": lang}

    def do_retrieve(s: dict) -> dict:
        translation = None
        if wants_translation(settings, model(), s["lang"], kb.languages()):
            translation = translate_query(settings, model(), s["query"], s["lang"])
        hits = kb.search(s["query"], k=settings.passages, also=[translation] if translation else None, **search)
        return {"hits": hits, "translation": translation,
                "grounded": _passes_checks(kb, settings, s["query"], hits)}

    def do_pack(s: dict) -> dict:
        if not s["grounded"]:
            return {"passages": [], "left_out": [], "messages": None, "prompt_tokens": 0, "how": "generate"}
        candidates = merge_hits(s["hits"], kb.span_text)
        how, readable = answer_mode(settings, model(), s["lang"], candidates)
        if how == "extract":
            numbered = [replace(p, n=i) for i, p in enumerate(candidates, 1)]
            return {"passages": numbered, "left_out": [], "messages": None, "prompt_tokens": 0, "how": how}
        chosen, left, messages, used = fit(model(), settings, s["question"], readable, s["history"], s["lang"])
        left += [p for p in candidates if p not in readable]
        return {"passages": chosen, "left_out": left, "messages": messages, "prompt_tokens": used, "how": how}

    def do_prompt(s: dict) -> dict:
        if s["grounded"] and s["passages"]:
            return {"mode": "answer"}
        if settings.no_sources == "general" and model() is not None:
            messages = prompts.general_messages(settings, s["question"], _trim_history(model(), settings, s["history"]))
            return {"mode": "general", "messages": messages, "how": "generate",
                    "prompt_tokens": model().count_message_tokens(messages)}
        return {"mode": "refuse", "messages": None}

    def generate(inputs: Iterator[dict]) -> Iterator[Any]:
        for s in inputs:
            if s["mode"] == "answer" and s["how"] == "extract":
                yield from _extract(kb, s)
            else:
                yield from _generate(model(), settings, s)

    def finish(items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            yield _to_answer(item, model() if chosen else None) if isinstance(item, dict) else item

    return (step("rewrite", do_rewrite) | step("retrieve", do_retrieve) | step("pack", do_pack)
            | step("prompt", do_prompt) | RunnableGenerator(generate, name="generate")
            | RunnableGenerator(finish, name="verify"))


def answer_mode(settings: AnswerSettings, backend, lang: str,
                candidates: list[Passage]) -> tuple[str, list[Passage]]:
    """('generate' or 'extract', the passages the model can read) for answer.mode (resolving auto).

    auto extracts when there is no chat model, when it cannot write the question's language or read the
    best passage, and when it is a small model (kb.llm.base.is_small: on the dev set's English questions
    SmolLM2-135M's answers cited the evidence for 0.26 of them and looped in 0.85, quotes for 0.59); it
    generates otherwise. A model is given only the passages in the languages it reads."""
    if settings.mode == "extract" or backend is None:
        return "extract", candidates
    readable = [p for p in candidates if language(p.text) in backend.languages]
    if settings.mode == "generate":
        return "generate", readable or candidates
    if lang not in backend.languages or not candidates or candidates[0] not in readable or is_small(backend):
        return "extract", candidates
    return "generate", readable


def _extract(kb, s: dict) -> Iterator[Any]:
    """The extractive answer (kb/extract.py), streamed line by line, then the state."""
    start = time.perf_counter()
    text, citations = extract(s["question"], s["passages"], s["lang"],
                              lambda texts: kb.similarity(s["query"], texts))
    lines = text.splitlines(keepends=True)
    first = None
    for line in lines:
        first = first if first is not None else time.perf_counter() - s["t0"]
        yield line
    timings = {**s["timings"], "first_token": first, "generate": time.perf_counter() - start}
    yield {**s, "text": text, "citations": citations, "timings": timings}


def _passes_checks(kb, settings: AnswerSettings, query: str, hits: list[Hit]) -> bool:
    """Some passage reaches answer.min_score, and (where the embedder reads the query) answer.min_similarity
    (unset: the embedder's calibrated threshold for the query's language)."""
    if not hits or max(h.score for h in hits) < settings.min_score:
        return False
    threshold = settings.min_similarity
    if threshold is None:
        threshold = kb.embedder().refusal_similarity(language(query))
    if threshold <= 0:
        return True
    sims = kb.passage_similarity(query, [h.chunk_id for h in hits])
    return sims is None or max(sims.values(), default=0.0) >= threshold


def _generate(backend, settings: AnswerSettings, s: dict) -> Iterator[Any]:
    """Stream the model's answer through the loop guard, then yield the state with the text and timings."""
    start = time.perf_counter()
    first = prefill = None
    repeated = False
    pieces: list[str] = []
    if s["mode"] == "refuse":
        pieces.append(prompts.REFUSAL[s["lang"]])
        yield pieces[0]
    else:
        if s["mode"] == "general":
            pieces.append(prompts.GENERAL_LABEL[s["lang"]])
            yield pieces[0]
        guard = LoopGuard()
        lc = [_LC[m.role](content=m.content) for m in s["messages"]]
        stream = as_chat_model(backend).stream(lc, max_new_tokens=answer_budget(backend, settings)[0])

        def text() -> Iterator[str]:
            nonlocal prefill
            try:
                for chunk in stream:
                    piece = chunk.content if isinstance(chunk.content, str) else str(chunk.content)
                    if prefill is None and piece:
                        prefill = time.perf_counter() - start
                    yield piece
            finally:
                stream.close()

        for shown in guarded(text(), guard):  # stops the model where it starts repeating itself
            first = first if first is not None else time.perf_counter() - s["t0"]
            pieces.append(shown)
            yield shown
        repeated = guard.stopped
    timings = {**s["timings"], "first_token": first, "prefill": prefill, "generate": time.perf_counter() - start}
    yield {**s, "text": "".join(pieces), "timings": timings, "repeated": repeated}


def _to_answer(s: dict, backend) -> Answer:
    t = s["timings"]
    timings = Timings(rewrite=t.get("rewrite", 0.0), retrieve=t.get("retrieve", 0.0), pack=t.get("pack", 0.0),
                      first_token=t.get("first_token"), prefill=t.get("prefill"), generate=t.get("generate", 0.0),
                      total=time.perf_counter() - s["t0"])
    common = dict(question=s["question"], query=s["query"], translation=s.get("translation"), passages=tuple(s["passages"]),
                  left_out=tuple(s["left_out"]), language=s["lang"],
                  backend=backend.name if backend is not None and s["mode"] != "refuse" and s.get("how") == "generate"
                  else "",
                  prompt_tokens=s["prompt_tokens"], timings=timings, repetition_stopped=s.get("repeated", False))
    if s["mode"] == "refuse":
        return Answer(text=s["text"], status="refused", **common)
    if s.get("how") == "extract" and s["mode"] == "answer":
        status = "answered" if s["citations"] else "not_found"
        return Answer(text=s["text"] or prompts.NOT_FOUND[s["lang"]], status=status, citations=s["citations"],
                      answer_mode="extract", **common)
    if s["mode"] == "general":
        return Answer(text=s["text"].strip(), status="general", **common)
    checked = verify(s["text"], s["passages"])
    status = "not_found" if prompts.says_not_found(checked.text) else "answered"
    return Answer(text=checked.text, status=status, citations=checked.citations,
                  unsupported=() if status == "not_found" else checked.unsupported,
                  dropped_markers=checked.dropped, **common)


def stream_answer(kb, backend, settings: AnswerSettings, question: str,
                  history: list[tuple[str, str]] | None = None, search: dict[str, Any] | None = None,
                  config: dict | None = None) -> Iterator[str | Answer]:
    """Run the chain: text pieces, then the Answer."""
    if not question or not question.strip():
        raise KBError("the question is empty")
    chain = build_chain(kb, backend, settings, search)
    state = {"question": question.strip(), "history": list(history or []), "t0": time.perf_counter(),
             "timings": {}}
    yield from chain.stream(state, config=config)
