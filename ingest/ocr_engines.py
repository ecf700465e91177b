"""The OCR engines: RapidOCR (PP-OCRv4 in the rapidocr-onnxruntime wheel) and tesseract (a command).

Each turns a PIL image into `Line`s (text, box, confidence). RapidOCR runs without its line direction
classifier (see RapidOcrEngine), and the spaces its recogniser drops between English words are put back
(`restore_spaces`, with wordninja's English word frequencies). tesseract reads chi_sim+eng by default.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from statistics import median

from . import orphans
from .ocr_layout import CJK_WIDE, Line

_LATIN_RUN = re.compile(r"[A-Za-z]{4,}")
_GLUED_PUNCT = re.compile(r"(?<=[A-Za-z])([,;])(?=[A-Za-z])|(?<=[a-z]{2})(\.)(?=[A-Z])")
_GLUED_NUMBER = re.compile(r"\b([A-Za-z]{2,})(?=\d)|(?<=\d)([A-Za-z]{3,})\b")
_COMMON_WORDS = 3000  # a word glued to a number is split off only if it is this common ("from8:00", not "eth0")
_TESSERACT_TIMEOUT = 300  # seconds per page: a 20000-pixel page takes about a minute
TESSERACT_MISSING = "tesseract is not installed (apt install tesseract-ocr tesseract-ocr-chi-sim)"


class OcrUnavailable(Exception):
    """No engine can run; the message names what to install."""


class RapidOcrEngine:
    """PP-OCRv4 without its line direction classifier: on the bench's 20 pages the classifier turned some
    upright lines upside down (a line of English came out as "s o d"), costing 4 of 100 points of
    character accuracy. A whole page upside down is caught instead: when most of a page reads badly, it
    is read again turned by 180° and the better reading is kept."""

    name = "rapidocr"
    # Pages are rendered to this long side (137 dpi for A4): detection time grows with the pixels, and
    # 1,600 read the bench pages as well as 2,000 (RapidOCR's own cap) in 0.8 of the time.
    long_side = 1600

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:  # opencv-python needs libGL.so.1, absent from slim containers
            raise OcrUnavailable(f"rapidocr cannot start ({e}); on Debian/Ubuntu: apt install libgl1, or "
                                 "pip install opencv-python-headless") from e
        import logging

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._ocr = RapidOCR(text_score=0.0, use_cls=False)  # kb filters by ingest.ocr_min_confidence itself

    def read(self, image) -> list[Line]:
        lines = self._read(image)
        if len(lines) >= 3 and median(x.confidence for x in lines) < 0.6:
            turned = self._read(image.rotate(180))
            if sum(x.confidence for x in turned) > sum(x.confidence for x in lines):
                return turned
        return lines

    def _read(self, image) -> list[Line]:
        import numpy as np

        result, _ = self._ocr(np.asarray(image.convert("RGB"))[:, :, ::-1], use_cls=False)  # RapidOCR takes BGR
        lines = []
        for box, text, score in result or ():
            xs, ys = [p[0] for p in box], [p[1] for p in box]
            lines.append(Line(restore_spaces(text), min(xs), min(ys), max(xs), max(ys), float(score)))
        return lines


class TesseractEngine:
    name = "tesseract"
    long_side = 3300  # about 300 dpi for A4, what tesseract is trained for

    def __init__(self, languages: str = "") -> None:
        if shutil.which("tesseract") is None:
            raise OcrUnavailable(TESSERACT_MISSING)
        installed = set(orphans.run(["tesseract", "--list-langs"], timeout=30).stdout.split()[1:] or ())
        wanted = languages or "+".join(x for x in ("chi_sim", "eng") if x in installed) or "eng"
        missing = [x for x in wanted.split("+") if x not in installed]
        if missing:
            raise OcrUnavailable(f"tesseract has no language data for {', '.join(missing)} (apt install "
                                 + " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing) + ")")
        self.languages = wanted

    def read(self, image) -> list[Line]:
        with tempfile.TemporaryDirectory(prefix="kb-ocr-") as folder:
            source = Path(folder, "page.png")
            image.convert("L").save(source)
            # psm 3: automatic page segmentation; preserve_interword_spaces keeps Chinese unspaced
            done = orphans.run(["tesseract", str(source), "stdout", "-l", self.languages, "--psm", "3",
                                "-c", "preserve_interword_spaces=1", "tsv"], timeout=_TESSERACT_TIMEOUT,
                               env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        if done.returncode != 0:
            raise OcrUnavailable(f"tesseract failed: {done.stderr.strip().splitlines()[-1:]}")
        return tesseract_lines(done.stdout)


def tesseract_lines(tsv: str) -> list[Line]:
    """Words of tesseract's TSV output joined into its lines; confidence is the mean of the words'."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        groups.setdefault(tuple(cols[1:5]), []).append(cols)
    lines = []
    for words in groups.values():
        height = median(int(w[9]) for w in words)
        segment: list[list[str]] = []
        for w in words:  # a gap wider than a line height between words separates table cells
            if segment and int(w[6]) - (int(segment[-1][6]) + int(segment[-1][8])) > height:
                lines.append(_tesseract_segment(segment))
                segment = []
            segment.append(w)
        lines.append(_tesseract_segment(segment))
    return lines


def _tesseract_segment(words: list[list[str]]) -> Line:
    text = ""
    for w in words:
        word = w[11].strip()
        text += word if not text or (CJK_WIDE.match(word[:1]) and CJK_WIDE.match(text[-1:])) else " " + word
    x0 = min(int(w[6]) for w in words)
    y0 = min(int(w[7]) for w in words)
    x1 = max(int(w[6]) + int(w[8]) for w in words)
    y1 = max(int(w[7]) + int(w[9]) for w in words)
    conf = sum(max(0.0, float(w[10])) for w in words) / len(words) / 100
    return Line(text, x0, y0, x1, y1, conf)


@functools.lru_cache(maxsize=1)
def _word_model():
    try:
        import wordninja
    except ImportError:
        return None
    return wordninja


def restore_spaces(text: str) -> str:
    """Put back spaces PP-OCR's recogniser dropped between English words ("mustsignin" -> "must sign in"):
    a Latin run of 4+ letters that is no word itself is split by word frequency, if every piece is a word
    of two letters or more (or "a"/"I", or a capital letter at the end); names and identifiers the
    dictionary cannot split stay whole.
    A comma or semicolon between two words, a full stop before the next sentence, and a word glued to a
    number ("from8:00 to14:00while") get their space back too."""
    model = _word_model()
    if model is None or not re.search(r"[A-Za-z]{3}", text):
        return text
    words = model.DEFAULT_LANGUAGE_MODEL._wordcost
    text = _GLUED_PUNCT.sub(lambda m: (m.group(1) or m.group(2)) + " ", text)

    common = math.log(_COMMON_WORDS * math.log(len(words)))  # wordninja's cost of the word of that rank

    def unglue(match: re.Match) -> str:
        word = match.group(1) or match.group(2)
        if words.get(word.lower(), common + 1) > common:
            return match.group(0)
        return word + " " if match.group(1) else " " + word

    text = _GLUED_NUMBER.sub(unglue, text)
    words = model.DEFAULT_LANGUAGE_MODEL._wordcost

    def split(match: re.Match) -> str:
        run = match.group(0)
        if run.lower() in words:  # a long word, not a run of words
            return run
        pieces = model.split(run)
        last = len(pieces) - 1  # a capital letter may end a run: "buildingB" -> "building B"
        if len(pieces) < 2 or any(p.lower() not in words or (len(p) < 2 and p not in "aAI"
                                                             and not (i == last and p.isupper()))
                                  for i, p in enumerate(pieces)):
            return run
        return " ".join(pieces)

    return _LATIN_RUN.sub(split, text)
