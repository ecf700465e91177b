"""The loop guard: stops a streamed answer as soon as the model starts repeating itself.

Small models fall into loops: the same sentence again and again until the token limit, or one phrase
without any sentence end. The guard sits between the model's stream and the reader and stops at the
first repeat: a sentence already said (compared without [n] markers, case, spacing and punctuation), or
a run of text that already occurred in the answer (RUN_WEIGHT characters' worth; a Chinese character
weighs two), even inside one sentence. It holds text back only while it could still become a repeat, so
the repeat is never shown, and the caller then closes the model's stream. It leaves out anything
model-specific (sampling penalties live in the backends).
"""

from __future__ import annotations

from collections.abc import Iterator

from kb.answer.citations import MARKER
from kb.text.lang import weight
from kb.text.sentences import LIST_LEAD, LIST_START, ONLY_LIST_NUMBER, STREAM_SENTENCE_END

SENTENCE_WEIGHT = 8  # a sentence shorter than this (weighted characters) may repeat ("Yes.", a table rule)
RUN_WEIGHT = 48  # a repeated run this long is a loop, even inside one sentence


def _words(text: str) -> tuple[str, list[int]]:
    """normalize(text), and where each of its characters is in `text`."""
    skip = {i for m in MARKER.finditer(text) for i in range(*m.span())}
    lead = LIST_LEAD.match(text)
    skip.update(range(lead.end() if lead else 0))
    kept = [(ch.lower(), i) for i, ch in enumerate(text) if ch.isalnum() and i not in skip]
    return "".join(ch for ch, _ in kept), [i for _, i in kept]


def normalize(sentence: str) -> str:
    """What two sentences must share to count as the same: letters and digits, lower-cased, without [n]
    markers and without a leading list number ("2. ", "- ")."""
    return _words(sentence)[0]


class LoopGuard:
    """Feed it the model's pieces; it returns the text that is safe to show. `stopped` turns true at the
    first repeat (stop the model then); `flush()` returns what is still held when the model ends.

    Text is held back only while it could still turn out to be a repeat: a sentence whose words so far
    begin an earlier sentence, and the last RUN_WEIGHT characters' worth of the one being written."""

    def __init__(self, sentence_weight: int = SENTENCE_WEIGHT, run_weight: int = RUN_WEIGHT) -> None:
        self.sentence_weight, self.run_weight = sentence_weight, run_weight
        self.shown_words = ""  # the words of the finished sentences, for the run check
        self.pending = ""  # the sentence being written
        self.released = 0  # how much of `pending` has been shown
        self.said: set[str] = set()
        self.stopped = False
        self.repeat = ""  # the text recognised as a repeat (for logs and tests)

    def feed(self, piece: str) -> str:
        """Take one piece of the stream; return the text to show now ("" while held or after a stop)."""
        if self.stopped or not piece:
            return ""
        self.pending += piece
        out = []
        while not self.stopped:
            end = self._sentence_end()
            if end is None:
                break
            out.append(self._finish(end))
        if not self.stopped:
            out.append(self._release())
        return "".join(out)

    def flush(self) -> str:
        """The held text at the end of the stream (a last sentence without an end mark)."""
        if self.stopped or not self.pending:
            return ""
        return self._finish(len(self.pending))

    def _sentence_end(self) -> int | None:
        """Index just past the first complete sentence in pending (with its trailing spaces), or None."""
        m = STREAM_SENTENCE_END.search(self.pending)
        while m is not None and ONLY_LIST_NUMBER.match(self.pending[:m.end()]):  # "2." starts a sentence
            m = STREAM_SENTENCE_END.search(self.pending, m.end())
        if m is None:
            return None
        end = m.end()
        while end < len(self.pending) and self.pending[end] in " \t":
            end += 1
        rest = self.pending[end:]
        if rest == "":  # a marker may still follow the end mark ("…kept. [2]"): wait, unless a line ended
            return end if self.pending[m.start()] == "\n" else None
        if rest[0] in "[【":  # the marker belongs to this sentence
            close = max(rest.find("]"), rest.find("】"))
            return end + close + 1 if close >= 0 else None
        return end

    def _finish(self, end: int) -> str:
        """Pass on the rest of a complete sentence unless it repeats one already said."""
        sentence = self.pending[:end]
        key = normalize(sentence)
        if weight(key) >= self.sentence_weight and key in self.said:
            return self._stop(sentence)
        if self._run_start(key) is not None:
            return self._stop(sentence)
        if weight(key) >= self.sentence_weight:
            self.said.add(key)
        out = sentence[self.released:]
        self.shown_words += key
        self.pending, self.released = self.pending[end:], 0
        return out

    def _release(self) -> str:
        """Show the part of the unfinished sentence that can no longer become part of a repeat."""
        key, where = _words(self.pending)
        if self._run_start(key) is not None:  # the held part holds the repeat: drop it
            return self._stop(self.pending[self.released:])
        if not key or LIST_START.match(self.pending) or any(s.startswith(key) for s in self.said):
            return ""  # ("2." may start a repeated item)
        # A repeat in the making is a run that occurred before: hold back the longest such end, no more.
        earlier = self.shown_words + key[:-1]
        size = 0
        while size < len(key) and key[len(key) - size - 1:] in earlier:
            size += 1
        cut = where[len(key) - size] if size else len(self.pending)
        cut = max(self.released, cut)
        out, self.released = self.pending[self.released:cut], cut
        return out

    def _run_start(self, key: str) -> int | None:
        """Where in `key` (the sentence's words) a run that already occurred begins, if one ends it."""
        tail = _tail(key, self.run_weight)
        if weight(tail) < self.run_weight:
            return None
        earlier = self.shown_words + key[: len(key) - 1]
        return len(key) - len(tail) if tail in earlier else None

    def _stop(self, repeat: str) -> str:
        self.stopped, self.repeat, self.pending = True, repeat, ""
        return ""


def _tail(text: str, least: int) -> str:
    """The shortest end of `text` that weighs at least `least` (all of it if lighter)."""
    total = 0
    for i in range(len(text) - 1, -1, -1):
        total += weight(text[i])
        if total >= least:
            return text[i:]
    return text


def guarded(pieces: Iterator[str], guard: LoopGuard | None = None) -> Iterator[str]:
    """`pieces` through a loop guard: what is safe to show, ending at the first repeat. The model's stream
    is closed there (that stops the model), and at the end of this one in any case."""
    guard = guard or LoopGuard()
    try:
        for piece in pieces:
            shown = guard.feed(piece)
            if shown:
                yield shown
            if guard.stopped:
                return
        tail = guard.flush()
        if tail:
            yield tail
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
