"""Where sentences end and where list items begin: the end marks and the list marks, written once.

A sentence ends at a Chinese end mark (。！？；) wherever it stands, at an English one (.!?;) only when
whitespace follows (so "3.5" and "json.dumps" stay whole), and at a line break. A list item begins with
a number of one or two digits and "." or ")" ("1.", "12)"), or a bullet ("-", "*", "•").

Each caller needs the rule in a different shape (a cut for re.split, a mark to find, a line's last
character, a span to highlight), so the shapes are named here, each with who uses it and, where it
differs from SENTENCE_BREAK, why. This module leaves out abbreviations ("e.g. ", "Dr. " end a sentence
here), closing quotes after an end mark (only the chunker keeps them with their sentence), and the list
numbers "(1)", "一、", "①" and "a.", which kb does not recognise as list marks anywhere. Which language a
text is in, and how much a character weighs, is kb/text/lang.py.
"""

from __future__ import annotations

import re

ZH_ENDS = "。！？；"
EN_ENDS = ".!?;"  # inside [...] these are literal

# The cut between two sentences (zero-width, for re.split): kb/answer/extract.py and kb/answer/citations.py.
SENTENCE_BREAK = re.compile(rf"(?<=[{ZH_ENDS}])|(?<=[{EN_ENDS}])(?=\s)|\n+")

# A sentence's end mark with the closing quotes and brackets after it, a run of marks as one ("?!"):
# ingest/split.py cuts chunks at its end. Kept apart from SENTENCE_BREAK because a chunk's text and
# id follow from where it is cut: cutting elsewhere would change every stored KB's chunks.
SENTENCE_END_MARK = re.compile(rf"[{ZH_ENDS}]+[”’」』）)]*|[{EN_ENDS}]+[\"')\]]*(?=\s)|\n")

# A sentence end in a stream (kb/answer/loop_guard.py): "!?;" end a sentence even when nothing follows
# yet, only "." waits for the whitespace that tells it from a decimal point. The loop guard itself
# waits for what follows an end to see whether a citation marker belongs to the sentence.
STREAM_SENTENCE_END = re.compile(rf"[{ZH_ENDS}!?;\n]|\.(?=\s)")

# A line whose last character ends a sentence, a colon included (a list or a quote follows):
# ingest/pdf.py and ingest/ocr_layout.py end a paragraph after such a line; kb/answer/extract.py takes a
# short line without one (nor a closing bracket) for a heading. kb/answer/citations.py also builds its
# "no space before punctuation" rule from ZH_ENDS and EN_ENDS.
ENDS_A_LINE = re.compile(rf"[{ZH_ENDS}{EN_ENDS}:：]$")

# A whole sentence with its end marks and the spaces after it, or a run of line breaks, for
# re.finditer: app/sources.py highlights the cited one. It cuts at every ".", a decimal point too: a
# highlight that is a little short does no harm there, so it is kept as it was.
SENTENCE_SPAN = re.compile(rf"[^{ZH_ENDS}{EN_ENDS}\n]+[{ZH_ENDS}{EN_ENDS}]*\s*|\n+")

LIST_NUMBER = r"\d{1,2}[.)]"  # "1.", "12)"
BULLET = r"[-*•]"
LIST_MARK = rf"(?:{LIST_NUMBER}|{BULLET})"

# Nothing but a list mark ("1.", "-"): kb/answer/citations.py joins it to the sentence after it.
ONLY_LIST_MARK = re.compile(rf"^{LIST_MARK}$")
# A list mark and the space after it at the start of a text ("2. ", "- "): dropped before two sentences
# are compared (kb/answer/loop_guard.py, kb/answer/citations.py).
LIST_LEAD = re.compile(rf"^\s*{LIST_MARK}\s+")
# Text that is only a list number so far ("2."), for re.match: its "." ends no sentence (loop_guard).
ONLY_LIST_NUMBER = re.compile(rf"\s*{LIST_NUMBER}\s*$")
# A list item being written, its number maybe without its "." yet ("2", "2.", "-"): loop_guard holds it.
LIST_START = re.compile(rf"\s*(?:{LIST_NUMBER}?|{BULLET})\s*$")
