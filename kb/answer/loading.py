"""Loading the chat model and the embedder in the background, so that a question's slow starts overlap.

A fresh `kb ask` spends its first seconds loading: the chat model (llama.cpp reads the GGUF file), the
embedder (its tokenizer's 250,000-piece vocabulary, then an ONNX session) and the chain's imports
(LangChain). `KnowledgeBase.stream` starts the model on a worker thread and hands the chain a `LazyBackend`,
which waits for the model the first time the chain asks it something. Once the model is in, the embedder
loads on a second worker while the model reads the fixed start of the prompt (`ChatBackend.warm`).
Much of this holds the GIL (the tokenizer's load all of it, the imports most), so the overlap saves less
than the loads' sum: measured with tests/bench/bench_startup.py. Each load remembers when it ran, so an
Answer's timings say how much of the call went into loading.

This module leaves out what is loaded (kb.llm, kb.ingest.embed) and who keeps it (the KB object, the
process-wide caches).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Generic, TypeVar

from kb.answer.prompts import answer_messages
from kb.answer.types import Answer
from kb.config import AnswerSettings
from kb.retrieval.retriever import Retriever, SearchOptions
from kb.text.lang import language

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run fn(*args) on kb's loader threads. (Python joins them at exit: a load in progress is finished,
    never cut off half-way through a native library's initialisation.)"""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kb-load")
        return _pool.submit(fn, *args)


def seconds_within(interval: tuple[float, float | None] | None, start: float, end: float) -> float:
    """How much of `interval` (perf_counter start, end; end None: still running) fell between start and end."""
    if interval is None:
        return 0.0
    began, finished = interval
    return max(0.0, min(end, finished if finished is not None else end) - max(began, start))


class Loader(Generic[T]):
    """Loads one thing once: now (`get`) or in the background (`start`). A failed load is not kept, so the
    next `get` tries again and raises its own error."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._future: Future[T] | None = None
        self.interval: tuple[float, float | None] | None = None  # when the last load ran (perf_counter)

    @property
    def loaded(self) -> bool:
        future = self._future
        return future is not None and future.done() and future.exception() is None

    def start(self, then: Callable[[T], object] | None = None) -> Future[T]:
        """Begin loading on a worker thread, unless a load has begun already. `then(thing)` runs on that
        thread right after a load this call began (its waiters are released first; its errors are ignored)."""
        with self._lock:
            failed = self._future is not None and self._future.done() and self._future.exception() is not None
            if self._future is None or failed:
                self._future = Future()
                submit(self._run, self._future, then)
            return self._future

    def get(self) -> T:
        """The loaded thing, waiting for a load in progress (or loading it now)."""
        return self.start().result()

    def wait(self) -> None:
        """Wait for a load in progress to end, whatever its outcome (`get` reports a failure)."""
        future = self._future
        if future is not None:
            future.exception()

    def _run(self, future: Future[T], then: Callable[[T], object] | None) -> None:
        self.interval = (time.perf_counter(), None)
        try:
            value = self._load()
        except BaseException as e:
            future.set_exception(e)
            return
        finally:
            self.interval = (self.interval[0], time.perf_counter())
        future.set_result(value)
        if then is not None:
            try:
                then(value)
            except Exception:  # a head start only: the caller works without it
                pass


class LazyBackend:
    """Stands in for a chat backend that may not be loaded yet: reading any attribute (`stream`,
    `context_window`, `name`, ...) calls `get()` once for the real backend, then reads go to it."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get
        self._backend = None

    def resolve(self):
        """The real backend (waits for it; raises its load error)."""
        if self._backend is None:
            self._backend = self._get()
        return self._backend

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_get", "_backend"):
            raise AttributeError(name)  # copy, pickle and a half-built object must not load the model
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return f"<LazyBackend {self._backend!r}>"


def answer_stream(retriever: Retriever, model: Loader, backend, question: str,
                  history: list[tuple[str, str]] | None, options: SearchOptions,
                  settings: AnswerSettings) -> Iterator[Any]:
    """kb.answer.chain's answer stream over `retriever`, with its chat model (`model`, unless `backend` is given) and
    its embedder loading on worker threads while the chain starts, and the Answer's timings counted from this call.

    With answer.mode extract the model is loaded only if something asks for it. Nothing is yielded while
    the model is still loading: llama.cpp silences the process's stdout and stderr while it reads a file."""
    # The chain imports LangChain (a third of a fresh `kb ask`'s start): it loads here, beside the model.
    from kb.answer.chain import stream_answer

    start = time.perf_counter()
    loading = None
    own = backend is None  # the KB's own model: its load counts in the Answer's timings
    if own and not model.loaded and settings.mode != "extract":
        # The model loads first, beside LangChain's imports: llama.cpp's native code needs the GIL only now
        # and then. The embedder's tokenizer holds the GIL for most of its load, so it starts once the model
        # is in, beside the model's head start on the prompt (which needs no GIL either).
        loading = model.start(then=_after_load(retriever, settings, question, history or []))
        backend = LazyBackend(loading.result)
    else:
        backend = LazyBackend(model.get) if own else backend
        submit(retriever.embedder)

    items = stream_answer(retriever, backend, settings, question, history, options)
    offset = time.perf_counter() - start  # the chain counts from its own start
    try:
        for item in items:
            if loading is not None:
                loading.exception()
                loading = None
            if isinstance(item, Answer):
                item = _timed(item, retriever, model if own else None, start, offset)
            yield item
    except Exception:
        if loading is not None:
            loading.exception()
        raise
    finally:
        items.close()


def _after_load(retriever: Retriever, settings: AnswerSettings, question: str,
                history: list[tuple[str, str]]) -> Callable[[Any], None]:
    """What follows the model's load: the embedder's, and a head start for the model: reading the fixed
    start of the answer prompt (instructions, history) while the question is retrieved. No head start for a
    model that cannot write the question's language (it will not be asked to)."""
    lang = language(question) if question and question.strip() else None
    messages = answer_messages(settings, question, [], history, lang) if lang else None

    def after(backend) -> None:
        submit(retriever.embedder)  # errors surface where the chain asks for it
        if messages and lang in backend.languages:
            backend.warm(messages)
    return after


def _timed(answer: Answer, retriever: Retriever, model: Loader | None, start: float, offset: float) -> Answer:
    """The Answer with load times (the parts of this call spent loading) and times counted from the call."""
    now = time.perf_counter()
    embedder = retriever.embedder()
    t = answer.timings
    timings = replace(
        t, load_model=seconds_within(model.interval, start, now) if model is not None else 0.0,
        load_embedder=seconds_within(getattr(embedder, "loaded", None), start, now),
        first_token=None if t.first_token is None else t.first_token + offset, total=t.total + offset)
    return replace(answer, timings=timings)
