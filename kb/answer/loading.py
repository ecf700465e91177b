"""Loading the chat model and the embedder in the background, so that a question's slow starts overlap.

A fresh `kb ask` spends its first seconds loading: the chat model (llama.cpp reads the GGUF file), the
embedder (its tokenizer's 250,000-piece vocabulary, then an ONNX session) and the chain's imports
(LangChain). kb/answer/service.py starts the model on a worker thread (a `Loader`) and hands the chain its
`get`, which waits for the model the first time the chain asks for it. Once the model is in, the embedder
loads on a second worker while the model reads the fixed start of the prompt (`ChatBackend.warm`).
Much of this holds the GIL (the tokenizer's load all of it, the imports most), so the overlap saves less
than the loads' sum: measured with tests/bench/bench_startup.py. Each load remembers when it ran, so an
Answer's timings say how much of the call went into loading.

`start_answer` is where every answer starts (KnowledgeBase.stream calls it, whichever face asked): the history
rule (kb.answer.chat.model_history) is applied there, once. This module leaves out what is loaded (kb.llm,
kb.ingest.embed) and who keeps it (the KB object, the answer service of kb/answer/service.py).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Generic, TypeVar

from kb.answer.chat import model_history
from kb.answer.prompts import answer_messages
from kb.answer.stream import AnswerStream
from kb.answer.types import Answer, Turn
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

    @classmethod
    def of(cls, thing: T) -> Loader[T]:
        """A Loader of something already loaded (its load took no time of anyone's)."""
        loader = cls(lambda: thing)
        loader._future = Future()
        loader._future.set_result(thing)
        return loader

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


def start_answer(retriever: Retriever, model: Loader, question: str, history: Sequence[Turn | tuple[str, Any]],
                 options: SearchOptions, settings: AnswerSettings, sampling: dict[str, Any] | None = None
                 ) -> AnswerStream:
    """kb.answer.chain's answer over `retriever` as an AnswerStream, with its chat model (`model`) and its
    embedder loading on worker threads while the chain starts; the Answer's times count from this call and
    hold the part of it spent loading. `history`: earlier turns, of which the model sees what model_history
    keeps. With answer.mode extract the model is loaded only if something asks for it."""
    # The chain imports LangChain (a third of a fresh `kb ask`'s start): it loads here, beside the model.
    from kb.answer.chain import stream_answer

    t0 = time.perf_counter()
    seen = model_history(history)
    loading = None
    if not model.loaded and settings.mode != "extract":
        # The model loads first, beside LangChain's imports: llama.cpp's native code needs the GIL only now
        # and then. The embedder's tokenizer holds the GIL for most of its load, so it starts once the model
        # is in, beside the model's head start on the prompt (which needs no GIL either).
        loading = model.start(then=_after_load(retriever, settings, question, seen))
    else:
        submit(retriever.embedder)
    stop = threading.Event()
    items = stream_answer(retriever, model.get, settings, question, seen, options, t0=t0, stop=stop,
                          sampling=sampling)
    return AnswerStream(_timed_items(items, loading, retriever, model, t0), stop)


def _timed_items(items: Iterator[Any], loading: Future | None, retriever: Retriever, model: Loader,
                 t0: float) -> Iterator[Any]:
    """The chain's items, the Answer with its load times. Nothing is yielded while the model is still loading:
    llama.cpp silences the process's stdout and stderr while it reads a file."""
    try:
        for item in items:
            if loading is not None:
                loading.exception()
                loading = None
            if isinstance(item, Answer):
                item = _timed(item, retriever, model, t0)
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


def _timed(answer: Answer, retriever: Retriever, model: Loader, t0: float) -> Answer:
    """The Answer with the parts of the call spent loading the model and the embedder."""
    now = time.perf_counter()
    embedder = retriever.embedder()
    timings = replace(answer.timings, load_model=seconds_within(model.interval, t0, now),
                      load_embedder=seconds_within(getattr(embedder, "loaded", None), t0, now))
    return replace(answer, timings=timings)
