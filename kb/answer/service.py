"""The one answer service: the CLI, the Streamlit app and both HTTP route sets answer through it.

    service = AnswerService(settings)
    stream = service.answer("policies", "How long are snapshots kept?", history=turns)
    for piece in stream: ...            # text pieces as they are written
    answer = stream.answer()             # the verified Answer

It owns what every face would otherwise do again:
- the knowledge bases, each opened once per service and reopened when another process deleted or rebuilt it
  (opening one reads its manifest and vector index);
- the chat model: the process's one model for these llm settings (kb.llm.shared), loaded on first use in the
  background beside the question's retrieval, so that threads (server requests, app sessions) take turns on it;
- the history rule (kb.answer.chat.model_history, applied where every answer starts) and stopping
  (AnswerStream.stop ends the model after its current piece and frees it);
- the queue bound (kb.answer.admission, server.max_queued): an answer that would use the model takes a place
  before it starts, or is refused at once with BusyError; the place is given back when its stream ends in any
  way (read, stopped, closed, failed, or dropped unread);
- the upload rule (kb.uploads.add_uploads): unsupported, empty or oversized files are refused with the reason,
  and a file that failed to ingest is not left behind.
The faces only shape input and output: a terminal, a Streamlit page, JSON or server-sent events. This module
leaves out HTTP (server/), widgets (app/) and how an answer is made (kb/answer/chain.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from kb.answer.admission import Admission, queue_limit
from kb.answer.loading import Loader
from kb.answer.stream import AnswerStream
from kb.answer.types import Answer, Turn
from kb.config import Settings
from kb.errors import KBExistsError, KBNotFoundError
from kb.handle import check_name
from kb.knowledge_base import KnowledgeBase
from kb.llm.base import ChatBackend
from kb.llm.shared import shared_backend
from kb.uploads import UploadReport, add_uploads, delete_kb

__all__ = ["AnswerService"]


class AnswerService:
    """Knowledge bases opened once, the process's one chat model, and answers, for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._kbs: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()
        self._model: Loader[ChatBackend] = Loader(lambda: shared_backend(settings.llm))
        self.admission = Admission(self._queue_limit)

    # -- knowledge bases ---------------------------------------------------------------------------
    def kb(self, name: str | None = None) -> KnowledgeBase:
        """The named KB (default: settings.kb), opened once; KBNotFoundError naming the existing ones if none."""
        name = check_name(name or self.settings.kb)
        with self._lock:
            kb = self._kbs.get(name)
            if kb is not None and not kb.exists():  # deleted by another process
                self._kbs.pop(name).close()
                kb = None
            if kb is None:
                kb = KnowledgeBase.open(name, settings=self.settings, create=False)
                self._kbs[name] = kb
            return kb

    def names(self) -> list[str]:
        return KnowledgeBase.names(self.settings)

    def create(self, name: str) -> KnowledgeBase:
        """A new, empty KB; KBExistsError if there is one of that name."""
        check_name(name)
        with self._lock:
            if name in KnowledgeBase.names(self.settings):
                raise KBExistsError(f"knowledge base '{name}' already exists")
            kb = KnowledgeBase.open(name, settings=self.settings, create=True)
            self._kbs[name] = kb
            return kb

    def delete(self, name: str) -> None:
        """Close and delete the KB and the files uploaded to it (a user's own folders stay where they are)."""
        check_name(name)
        with self._lock:
            if name not in KnowledgeBase.names(self.settings):
                raise KBNotFoundError(f"no knowledge base named '{name}'")
            kb = self._kbs.pop(name, None)
            if kb is not None:
                kb.close()
            delete_kb(self.settings, name)

    def upload(self, name: str, files: Sequence[tuple[str | None, bytes | BinaryIO, int | None]],
               progress: Any = None, refuse_all: bool = False) -> UploadReport:
        """Store and ingest uploaded files (name as sent, content, size if known) into KB `name` by the one upload
        rule (kb.uploads.add_uploads); `refuse_all`: one refused file refuses the whole batch (UploadRefused).
        The ingest writes through a KB object of its own, so answers from the shared one go on meanwhile."""
        self.kb(name)  # KBNotFoundError naming the existing KBs
        with KnowledgeBase.open(name, settings=self.settings, create=False) as writer:
            return add_uploads(writer, files, progress=progress, refuse_all=refuse_all)

    def close(self) -> None:
        with self._lock:
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()

    # -- answering ---------------------------------------------------------------------------------
    def _queue_limit(self) -> int:
        """server.max_queued, else the bound for this model (kb.answer.admission.queue_limit); a model not loaded
        yet has not said that it runs several answers at once."""
        parallel = self._model.loaded and self._model.get().parallel_safe
        return queue_limit(self.settings.server.max_queued, parallel)

    def backend(self) -> ChatBackend:
        """The process's chat model for these settings (waits for a load in progress, or loads it now)."""
        return self._model.get()

    def answer(self, kb: str | KnowledgeBase | None, question: str,
               history: Sequence[Turn | tuple[str, Answer | str]] = (), *, answer_mode: str | None = None,
               sampling: dict[str, Any] | None = None, **search: Any) -> AnswerStream:
        """An AnswerStream for `question` over KB `kb` (a name, default settings.kb, or an open KB).

        `history`: earlier turns, oldest first, as Turns or (question, Answer or answer text) pairs: the model
        sees those that answered from the documents, without their [n] markers. `sampling`: this answer's
        temperature / top_p / max_new_tokens. `search`: the filters of KnowledgeBase.search. BusyError, before
        anything starts, when server.max_queued answers are running or waiting for the model (answers in answer
        mode extract use no model and never wait)."""
        base = kb if isinstance(kb, KnowledgeBase) else self.kb(kb)

        def start() -> AnswerStream:
            return base.stream(question, history=history, backend=self._model, answer_mode=answer_mode,
                               sampling=sampling, **search)
        if (answer_mode or base.settings.answer.mode) == "extract":
            return start()
        return self._admitted(start)

    def _admitted(self, start: Callable[[], AnswerStream]) -> AnswerStream:
        """start() in a place of the queue (BusyError when there is none), given back when its stream ends."""
        place = self.admission.enter()
        try:
            stream = start()
        except BaseException:
            place.release()
            raise
        weakref.finalize(stream, place.release)  # a stream dropped without being read or closed
        ref = weakref.ref(stream)  # (the stream holds the callback: no cycle that only the GC would free)
        return stream.on_end(lambda: place.release(completed=getattr(ref(), "done", False)))
