"""What `KnowledgeBase.ask` returns: the answer text with its verified citations, the passages the
model saw (and those left out for lack of room), and where the time went.

An `Answer` carries its citations as data; nothing downstream re-parses the text. This module leaves
out how the answer is produced (kb/answer/chain.py) and how markers are checked (kb/answer/citations.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kb.types import format_location

Status = Literal["answered", "refused", "not_found", "general"]
AnswerMode = Literal["generate", "extract"]


@dataclass(frozen=True)
class Passage:
    """One numbered passage of the prompt ([n]); neighbouring hits of one section are merged into one."""

    n: int  # its number in the prompt, 1-based; 0 for a passage left out
    path: str
    title: str
    section: str
    page: int | None
    text: str
    score: float  # the best retrieval score of the hits it holds (0..1)
    chunk_ids: tuple[int, ...]
    doc_id: str = ""
    tokens: int = 0  # tokens it adds to the prompt, in the model's tokenizer

    @property
    def location(self) -> str:
        """'file, p. 3, § Section' for display."""
        return format_location(self.path, self.page, self.section)


@dataclass(frozen=True)
class Citation:
    """A [n] marker of the answer that points at a real passage."""

    n: int
    path: str
    page: int | None
    section: str
    text: str  # the passage text
    sentence: str  # the answer sentence that carries the marker (markers removed)
    overlap: float = 0.0  # share of the sentence's key terms found in the passage (0..1)
    inferred: bool = False  # True: the model wrote no marker; kb attributed the sentence by its overlap


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each step; `first_token` counts from the start of the call. `load_model` and
    `load_embedder` are the parts of the call spent loading them (0 when they were already loaded);
    `prefill` is from the model call to its first piece (reading the prompt)."""

    load_model: float = 0.0
    load_embedder: float = 0.0
    rewrite: float = 0.0
    retrieve: float = 0.0
    pack: float = 0.0
    first_token: float | None = None
    prefill: float | None = None
    generate: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Answer:
    """An answer with its sources. `status`: answered, refused (no passage passed the relevance checks,
    the model was not called), not_found (the model said the passages hold no answer), or general (the
    labelled general-knowledge mode: no sources)."""

    question: str
    query: str  # the standalone query that was searched (differs from question for chat follow-ups)
    text: str  # the answer, with markers that point nowhere removed
    status: Status
    citations: tuple[Citation, ...] = ()
    passages: tuple[Passage, ...] = ()  # numbered as in the prompt
    left_out: tuple[Passage, ...] = ()  # retrieved but did not fit the window
    unsupported: tuple[str, ...] = ()  # answer sentences without a valid marker
    dropped_markers: tuple[int, ...] = ()  # [n] markers that pointed at no passage
    language: str = "en"
    backend: str = ""
    prompt_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    translation: str | None = None  # the query in the other language, also searched (answer.translate_query)
    answer_mode: AnswerMode = "generate"  # generate: written by the chat model; extract: quoted from the passages
    repetition_stopped: bool = False  # the model started repeating itself; generation was stopped there

    @property
    def refused(self) -> bool:
        """True when no answer from the documents was given (refused or not_found)."""
        return self.status in ("refused", "not_found")

    @property
    def cited_passages(self) -> list[Passage]:
        """The passages at least one citation points at, in prompt order."""
        cited = {c.n for c in self.citations}
        return [p for p in self.passages if p.n in cited]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for `kb ask --json` and the HTTP server)."""
        data = asdict(self)
        data["refused"] = self.refused
        return data


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation: the question and the Answer it got."""

    question: str
    answer: Answer
