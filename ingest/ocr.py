"""Text from pictures of text: scanned PDF pages and image files, in Chinese and English, offline.

Two engines, chosen by `ingest.ocr`:
- **rapidocr** (the default): PP-OCRv4 detection and recognition (Chinese + English) and a direction
  classifier, ONNX models inside the `rapidocr-onnxruntime` wheel (the `ocr` extra), on onnxruntime's CPU.
  Its recogniser often drops the spaces between English words ("Visitorsmustsign"); long Latin runs
  that are no dictionary word are split again with wordninja's English word frequencies.
- **tesseract**: Debian's `tesseract-ocr` with `tesseract-ocr-chi-sim`, run as a command (for Python
  3.13+, where the rapidocr wheel is not available).

An engine returns lines with boxes and confidences; `page_elements` puts them in reading order and turns
them into kb Elements: rows of boxes side by side become table rows, a page in two wide columns is read
column by column, taller short lines become headings, and lines become paragraphs where the vertical gap
or a short sentence-ending line says so. What it leaves out: handwriting, vertical Chinese, rotated pages
other than upside down (rapidocr's classifier turns lines by 180°), and ruled-table structure beyond
rows of aligned cells.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from kb.errors import ParseError
from kb.types import Element

ENGINES = ("auto", "rapidocr", "tesseract", "off")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_SENTENCE_END = re.compile(r"[。！？；.!?;:：]$")
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
_LATIN_RUN = re.compile(r"[A-Za-z]{4,}")
_GLUED_PUNCT = re.compile(r"(?<=[A-Za-z])([,;])(?=[A-Za-z])|(?<=[a-z]{2})(\.)(?=[A-Z])")
_GLUED_NUMBER = re.compile(r"\b([A-Za-z]{2,})(?=\d)|(?<=\d)([A-Za-z]{3,})\b")
_COMMON_WORDS = 3000  # a word glued to a number is split off only if it is this common ("from8:00", not "eth0")
_TESSERACT_TIMEOUT = 300  # seconds per page: a 20000-pixel page takes about a minute


@dataclass(frozen=True)
class OcrOptions:
    """What OCR may do, from the `ingest` settings."""

    engine: str = "auto"  # auto | rapidocr | tesseract | off
    min_confidence: float = 0.5  # lines the engine is less sure of are dropped (0..1)
    max_image_pixels: int = 100_000_000
    tesseract_languages: str = ""  # empty: chi_sim+eng, or what of them is installed

    @classmethod
    def from_settings(cls, settings) -> OcrOptions:
        """From kb.config.IngestSettings."""
        return cls(settings.ocr, settings.ocr_min_confidence, int(settings.max_image_megapixels * 1_000_000),
                   settings.ocr_languages)


@dataclass
class OcrRun:
    """One file's OCR: the options, a per-page progress callback (page, pages), and what was done."""

    options: OcrOptions = field(default_factory=OcrOptions)
    on_page: Callable[[int, int], None] | None = None
    pages: int = 0
    seconds: float = 0.0
    engine: str = ""
    unread: int = 0  # scanned pages left unread: OCR off or not installed

    def read(self, image, page: int | None, path: Path, pages: int = 1) -> list[Element]:
        """The Elements of one page image; counts the page and reports progress."""
        engine = get_engine(self.options, path)
        started = time.perf_counter()
        lines = engine.read(image)
        self.seconds += time.perf_counter() - started
        self.pages += 1
        self.engine = engine.name
        if self.on_page is not None:
            self.on_page(page or 1, pages)
        kept = [x for x in lines if x.confidence >= self.options.min_confidence and x.text.strip()]
        return page_elements(kept, page)


def release_memory() -> None:
    """Hand the buffers OCR freed back to the system, after a file: each page allocates and frees a few
    hundred MB of images and tensors, which glibc otherwise keeps (a process that OCR'd 100 pages held
    590 MB afterwards, 171 MB with this). Once per file, not per page: per page it cost 14% of the time
    on sparse pages, re-faulting the memory. (Not glibc: nothing to do.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Line:
    """One line (or cell) of text the engine found, with its box in pixels."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def middle(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def em(self) -> float:
        """The font size the box suggests: its width over its characters (a Chinese character is one em
        wide, others about half). Box heights say less: engines pad them by a constant."""
        cjk = len(_CJK.findall(self.text))
        return (self.x1 - self.x0) / max(1.0, cjk + 0.5 * (len(self.text) - cjk))


# -- engines --------------------------------------------------------------------------------------
class OcrUnavailable(Exception):
    """No engine can run; the message names what to install."""


def available(options: OcrOptions) -> tuple[str, str]:
    """(engine name or "", why not) for these options, without loading a model."""
    wanted = options.engine
    if wanted == "off":
        return "", "OCR is off (ingest.ocr: off)"
    problems = []
    if wanted in ("auto", "rapidocr"):
        reason = _rapidocr_missing()
        if not reason:
            return "rapidocr", ""
        problems.append(reason)
    if wanted in ("auto", "tesseract"):
        reason = _tesseract_missing()
        if not reason:
            return "tesseract", ""
        problems.append(reason)
    return "", "; ".join(problems)


def _rapidocr_missing() -> str:
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return ("rapidocr is not installed (pip install 'kb[ocr]'; Python 3.13+ has no wheel of it: install "
                "tesseract instead, apt install tesseract-ocr tesseract-ocr-chi-sim)")
    return ""


def _tesseract_missing() -> str:
    if shutil.which("tesseract") is None:
        return "tesseract is not installed (apt install tesseract-ocr tesseract-ocr-chi-sim)"
    return ""


def get_engine(options: OcrOptions, path: Path):
    name, why = available(options)
    if not name:
        raise ParseError(str(path), f"a scan or image needs OCR, and {why}")
    try:
        return _engine(name, options.tesseract_languages)
    except OcrUnavailable as e:
        raise ParseError(str(path), str(e)) from e


@functools.lru_cache(maxsize=4)
def _engine(name: str, languages: str):
    """One engine per process: loading the three ONNX models takes about a second."""
    return RapidOcrEngine() if name == "rapidocr" else TesseractEngine(languages)


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
            raise OcrUnavailable(_tesseract_missing())
        installed = set(subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True,
                                       timeout=30).stdout.split()[1:] or ())
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
            done = subprocess.run(["tesseract", str(source), "stdout", "-l", self.languages, "--psm", "3",
                                   "-c", "preserve_interword_spaces=1", "tsv"], capture_output=True, text=True,
                                  timeout=_TESSERACT_TIMEOUT, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
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
        text += word if not text or (_CJK.match(word[:1]) and _CJK.match(text[-1:])) else " " + word
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
    of two letters or more (or "a"/"I"); names and identifiers the dictionary cannot split stay whole.
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
        if len(pieces) < 2 or any(p.lower() not in words or (len(p) < 2 and p not in "aAI") for p in pieces):
            return run
        return " ".join(pieces)

    return _LATIN_RUN.sub(split, text)


# -- layout -----------------------------------------------------------------------------------------
def page_elements(lines: list[Line], page: int | None) -> list[Element]:
    """Lines with boxes -> headings, paragraphs and tables in reading order."""
    if not lines:
        return []
    height = median(x.height for x in lines)
    rows = _rows(lines, height)
    left = min(x.x0 for x in lines)
    width = max(x.x1 for x in lines) - left
    out: list[Element] = []
    i = 0
    while i < len(rows):
        cells = _cells(rows[i], height)
        if len(cells) > 1:
            j = i
            block = []
            while j < len(rows) and len(_cells(rows[j], height)) > 1:
                block.append(_cells(rows[j], height))
                j += 1
            out.extend(_multi_cell(block, width, page, height))
            i = j
            continue
        j = i
        while j < len(rows) and len(_cells(rows[j], height)) == 1:
            j += 1
        out.extend(_paragraphs([_join(r) for r in rows[i:j]], height, left, width, page))
        i = j
    return out


def _rows(lines: list[Line], height: float) -> list[list[Line]]:
    """Lines whose middles lie within half a line height of each other form one row, left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda x: x.middle):
        if rows and abs(line.middle - median(x.middle for x in rows[-1])) < height * 0.5:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(r, key=lambda x: x.x0) for r in rows]


def _cells(row: list[Line], height: float) -> list[Line]:
    """A row's boxes, neighbours less than two line heights apart merged (one line the engine cut)."""
    cells: list[Line] = []
    for box in row:
        last = cells[-1] if cells else None
        if last is not None and box.x0 - last.x1 < height * 2:
            space = "" if _CJK.match(box.text[:1]) and _CJK.search(last.text[-1:]) else " "
            cells[-1] = Line(last.text + space + box.text, last.x0, min(last.y0, box.y0), box.x1,
                             max(last.y1, box.y1), min(last.confidence, box.confidence))
        else:
            cells.append(box)
    return cells


def _join(row: list[Line]) -> Line:
    cells = _cells(row, max(x.height for x in row) or 1.0)
    return cells[0] if len(cells) == 1 else Line(" ".join(c.text for c in cells), cells[0].x0,
                                                   min(c.y0 for c in cells), cells[-1].x1,
                                                   max(c.y1 for c in cells), min(c.confidence for c in cells))


def _multi_cell(block: list[list[Line]], width: float, page: int | None, height: float) -> list[Element]:
    """Rows of several cells: a table, or a page set in two columns (two wide cells per row)."""
    wide = sum(1 for cells in block if len(cells) == 2 and min(c.x1 - c.x0 for c in cells) > width * 0.3)
    if len(block) >= 3 and wide >= len(block) * 0.7:
        split = median(cells[1].x0 for cells in block if len(cells) == 2)
        left = [c for cells in block for c in cells if c.x1 <= split]
        right = [c for cells in block for c in cells if c.x1 > split]
        return (_paragraphs(left, height, min(c.x0 for c in left), width / 2, page) if left else []) + \
               (_paragraphs(right, height, min(c.x0 for c in right), width / 2, page) if right else [])
    if len(block) == 1:
        return [Element(" ".join(c.text for c in block[0]), page=page)]
    rows = tuple(tuple(c.text for c in cells) for cells in block)
    return [Element("\n".join(" | ".join(r) for r in rows), "table", page, rows=rows)]


def _paragraphs(lines: list[Line], height: float, left: float, width: float, page: int | None) -> list[Element]:
    """Lines -> headings and paragraphs. A paragraph ends at a gap taller than usual, before an indented
    first line, or after a short line that ends a sentence."""
    out: list[Element] = []
    gaps = sorted(b.y0 - a.y1 for a, b in zip(lines, lines[1:], strict=False))
    # Most gaps are between lines of one paragraph; on a page of a few lines, they may all be paragraph
    # gaps, so the usual gap is then taken at most a quarter of a line (single spacing).
    usual_gap = max(0.0, gaps[len(gaps) // 4]) if gaps else 0.0
    if len(gaps) < 4:
        usual_gap = min(usual_gap, height * 0.25)
    body = median(x.em for x in lines if len(x.text) >= 8) if any(len(x.text) >= 8 for x in lines) else 0
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(Element(join_lines(current), page=page))
            current.clear()

    for k, line in enumerate(lines):
        if body and line.em > body * 1.2 and len(line.text) <= 60 and not _SENTENCE_END.search(line.text):
            flush()
            out.append(Element(line.text, "title", page, depth=0 if line.em > body * 1.5 else 1))
            continue
        if k and current:
            gap = line.y0 - lines[k - 1].y1
            indented = line.x0 - left > height * 1.5
            if gap > usual_gap + height * 0.25 or indented:
                flush()
        current.append(line.text)
        short = line.x1 - left < width * 0.85
        if _SENTENCE_END.search(line.text) and short:
            flush()
    flush()
    return out


def join_lines(lines: list[str]) -> str:
    """A paragraph's lines as one string: Chinese lines join without a space, a hyphenated English word
    broken across lines is re-joined."""
    text = lines[0]
    for line in lines[1:]:
        if text.endswith("-") and not text.endswith(" -") and line[:1].islower():
            text = text[:-1] + line
        elif _CJK.search(text[-1:]) and _CJK.search(line[:1]):
            text += line
        else:
            text += " " + line
    return text


# -- images -----------------------------------------------------------------------------------------
def load_image(path: Path, run: OcrRun) -> list[Element]:
    """An image file (every frame of a multi-page TIFF) through OCR. Huge or damaged images are refused
    with the reason before any pixel is decoded."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    limit = run.options.max_image_pixels
    Image.MAX_IMAGE_PIXELS = None  # kb checks the size itself, below, with a message that names the setting
    try:
        image = Image.open(path)
    except UnidentifiedImageError as e:
        raise ParseError(str(path), "not a readable image (damaged, or not the format its name says)") from e
    with image:
        engine_side = _engine_side(run)
        if image.format == "JPEG":  # decode at a reduced scale: fast, and a big photo never fills memory
            image.draft("RGB", (engine_side, engine_side))
        w, h = image.size
        if w * h > limit:
            raise ParseError(str(path), f"image too large ({w:,}×{h:,} = {w * h / 1e6:,.0f} megapixels; kb reads "
                                        f"images up to {limit / 1e6:g}, ingest.max_image_megapixels): scale it "
                                        "down or raise the limit")
        frames = getattr(image, "n_frames", 1)
        out: list[Element] = []
        try:
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                page = index + 1 if frames > 1 else None
                picture = ImageOps.exif_transpose(frame.convert("RGB"))
                out.extend(run.read(fit(picture, engine_side), page, path, frames))
        except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt pixel data
            raise ParseError(str(path), f"damaged image: {e}") from e
    if not out:
        raise ParseError(str(path), "no text found in the image (OCR read nothing)")
    return out


def _engine_side(run: OcrRun) -> int:
    name, _ = available(run.options)
    return TesseractEngine.long_side if name == "tesseract" else RapidOcrEngine.long_side


def fit(image, long_side: int):
    """Shrink so the longer side is at most `long_side` (engines gain nothing from more pixels)."""
    w, h = image.size
    if max(w, h) <= long_side:
        return image
    scale = long_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=3)


def render_scale(width_pt: float, height_pt: float, run: OcrRun) -> float:
    """pypdfium2's render scale (pixels per point) for a page OCR reads: the engine's preferred long side,
    at most 300 dpi (a poster-sized page is read at less: memory stays bounded)."""
    return min(300 / 72, _engine_side(run) / max(width_pt, height_pt, 1))
