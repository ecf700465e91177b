"""ChatGLM2's tokenizer and prompt format, written over `sentencepiece` alone.

THUDM's tokenizer class only runs through their remote code. The rules are small: the
SentencePiece model's pieces come first, then five specials ([MASK], [gMASK], [sMASK], sop, eop);
every prompt starts with [gMASK] sop and has no BOS; eos is the SentencePiece eos (2). Chat turns
render as `[Round i]\\n\\n问：{q}\\n\\n答：{a}\\n\\n`. This module leaves out batching and padding.
"""

from __future__ import annotations

from pathlib import Path

from kb.errors import ModelError
from kb.llm.base import Message, check_messages, require

SPECIALS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")


class ChatGLM2Tokenizer:
    """Encodes text and chat prompts the way ChatGLM2 was trained."""

    def __init__(self, model_file: str | Path) -> None:
        spm = require("sentencepiece", "hf", "The ChatGLM2 tokenizer")
        path = Path(model_file)
        if not path.is_file():
            raise ModelError(f"tokenizer file {path} does not exist; copy tokenizer.model from the model folder")
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.n_pieces = self.sp.vocab_size()
        self.special_ids = {tok: self.n_pieces + i for i, tok in enumerate(SPECIALS)}
        self._special_by_id = {i: tok for tok, i in self.special_ids.items()}
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.unk_id()
        self.prefix = [self.special_ids["[gMASK]"], self.special_ids["sop"]]

    @property
    def vocab_size(self) -> int:
        """Pieces plus the five specials."""
        return self.n_pieces + len(SPECIALS)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without the [gMASK] sop prefix."""
        return self.sp.encode(text) if text else []

    def encode_prompt(self, text: str) -> list[int]:
        """[gMASK] sop + the ids of `text`: the model's input for a raw prompt."""
        return self.prefix + self.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; specials print as their names, ids past the vocabulary are dropped."""
        text, run = [], []
        for i in ids:
            if i in self._special_by_id:
                text.append(self.sp.decode(run))
                text.append(self._special_by_id[i])
                run = []
            elif 0 <= i < self.n_pieces:
                run.append(i)
        text.append(self.sp.decode(run))
        return "".join(text)


def build_prompt(messages: list[Message]) -> str:
    """ChatGLM2's chat prompt; system text is folded into the first user turn."""
    check_messages(messages)
    system = "\n".join(m.content for m in messages if m.role == "system")
    turns: list[tuple[str, str | None]] = []
    for m in messages:
        if m.role == "user" and turns and turns[-1][1] is None:
            turns[-1] = (f"{turns[-1][0]}\n\n{m.content}", None)  # consecutive user turns merge
        elif m.role == "user":
            turns.append((m.content, None))
        elif m.role == "assistant":
            if not turns or turns[-1][1] is not None:
                raise ModelError("an assistant message must follow a user message in the chat history")
            turns[-1] = (turns[-1][0], m.content)
    if system:
        turns[0] = (f"{system}\n\n{turns[0][0]}", turns[0][1])
    parts = []
    for i, (q, a) in enumerate(turns, 1):
        parts.append(f"[Round {i}]\n\n问：{q}\n\n答：")
        if a is not None:
            parts.append(f"{a}\n\n")
    return "".join(parts)
