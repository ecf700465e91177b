"""Fine-tuning data: read Q&A records and turn them into model inputs with answer-only labels.

Records are the ChatGLM community's `{"content": "问题", "summary": "答案"}`, one JSON object per
line or one JSON array, with configurable keys and an optional history field (a list of
`[question, answer]` pairs). Each becomes the exact prompt the backend builds at answer time
(`backend.prompt_ids`, so ChatGLM2's `[Round i]` format or an HF model's chat template), followed by
the answer and eos; the labels are -100 on the prompt so the loss covers the answer only. A bad
record raises `ParseError` naming the file, the line and the field. It leaves out packing several
examples into one sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kb.errors import ParseError
from kb.llm.base import Message

IGNORE = -100  # label value the cross-entropy loss skips


@dataclass(frozen=True)
class Record:
    """One training or eval example."""

    prompt: str
    response: str
    history: tuple[tuple[str, str], ...] = ()
    line: int = 0  # where it starts in its file, for error messages

    def messages(self) -> list[Message]:
        """The chat that leads to `response`: earlier turns, then the prompt."""
        out = []
        for q, a in self.history:
            out += [Message("user", q), Message("assistant", a)]
        return [*out, Message("user", self.prompt)]


@dataclass(frozen=True)
class Example:
    """Token ids of one record and its labels (same length)."""

    input_ids: list[int]
    labels: list[int]


def _objects(text: str, path: Path):
    """Yield (line, object) from a JSON array or JSON Lines text."""
    stripped = text.lstrip()
    if not stripped.startswith("["):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ParseError(str(path), f"line {n}: not valid JSON ({e.msg}, column {e.colno})") from e
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1

    def skip(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    while pos < len(text) and text[pos] != "]":
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ParseError(str(path), f"line {e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from e
        yield line, obj
        pos = skip(pos)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
        elif pos >= len(text) or text[pos] != "]":
            raise ParseError(str(path), f"line {text.count(chr(10), 0, pos) + 1}: expected ',' or ']' in the array")


def _history(value, path: Path, line: int, key: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    ok = isinstance(value, list) and all(
        isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in value)
    if not ok:
        raise ParseError(str(path), f"line {line}: field {key!r} must be a list of [question, answer] string pairs")
    return tuple((q, a) for q, a in value)


def load_records(path: str | Path, *, prompt_key: str = "content", response_key: str = "summary",
                 history_key: str | None = None) -> list[Record]:
    """Read a JSON Lines file or a JSON array of records; ParseError names line and field."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ParseError(str(path), "the data file does not exist")
    records = []
    for line, obj in _objects(path.read_text(encoding="utf-8-sig"), path):
        if not isinstance(obj, dict):
            raise ParseError(str(path), f"line {line}: a record must be a JSON object, not {type(obj).__name__}")
        for key in (prompt_key, response_key):
            if key not in obj:
                raise ParseError(str(path), f"line {line}: field {key!r} is missing (keys: {', '.join(obj) or 'none'}); "
                                 "set --prompt-key / --response-key to the names your file uses")
            if not isinstance(obj[key], str):
                raise ParseError(str(path), f"line {line}: field {key!r} must be a string, not {type(obj[key]).__name__}")
        if not obj[prompt_key].strip():
            raise ParseError(str(path), f"line {line}: field {prompt_key!r} is empty")
        history = _history(obj.get(history_key), path, line, history_key) if history_key else ()
        records.append(Record(obj[prompt_key], obj[response_key], history, line))
    if not records:
        raise ParseError(str(path), "no records found")
    return records


def encode(record: Record, prompt_ids, answer_ids, eos_id: int, *, max_source: int, max_target: int) -> Example:
    """[prompt][answer][eos] with labels -100 on the prompt.

    `prompt_ids(messages)` is the backend's own prompt builder, so training sees exactly what
    inference feeds. A prompt longer than `max_source` keeps its first two ids (ChatGLM2's
    [gMASK] sop) and its last ones: the end holds the question and the answer cue the answer
    follows. The answer is cut to `max_target` ids before eos.
    """
    prompt = list(prompt_ids(record.messages()))
    if len(prompt) > max_source:
        prompt = prompt[:2] + prompt[len(prompt) - (max_source - 2):]
    answer = list(answer_ids(record.response))[:max_target] + [eos_id]
    return Example(prompt + answer, [IGNORE] * len(prompt) + answer)


def collate(examples: list[Example], pad_id: int):
    """Right-padded input_ids / attention_mask / labels tensors for a batch."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
