"""Text from pictures of text: scanned PDF pages and image files, in Chinese and English, offline.

`ingest.ocr` chooses the engine (ingest/ocr_engines.py): **rapidocr** (the default; PP-OCRv4 ONNX models
inside the `rapidocr-onnxruntime` wheel, the `ocr` extra) or **tesseract** (Debian's `tesseract-ocr` with
`tesseract-ocr-chi-sim`, run as a command; what Python 3.13+ gets, where the rapidocr wheel stops);
`auto` takes the first that is installed. ingest/ocr_layout.py turns the engine's lines into headings,
paragraphs and table rows. This module holds the settings, one file's run (pages read, time, progress),
image files (`load_image`) and the render size of a scanned PDF page (`render_scale`, used by
ingest/pdf.py). Handwriting, vertical Chinese and pages turned by 90° are left out.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from kb.config import IngestSettings
from kb.errors import ParseError
from kb.types import Element

from .ocr_engines import TESSERACT_MISSING, OcrUnavailable, RapidOcrEngine, TesseractEngine
from .ocr_layout import pack_lines, page_elements

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_DEFAULTS = IngestSettings()  # a plain model (no environment is read): its field defaults, nothing else


@dataclass(frozen=True)
class OcrOptions:
    """What OCR may do, from the `ingest` settings; the defaults are theirs."""

    engine: str = _DEFAULTS.ocr  # auto | rapidocr | tesseract | off
    min_confidence: float = _DEFAULTS.ocr_min_confidence  # lines the engine is less sure of are dropped (0..1)
    max_image_pixels: int = int(_DEFAULTS.max_image_megapixels * 1_000_000)
    tesseract_languages: str = _DEFAULTS.ocr_languages  # empty: chi_sim+eng, or what of them is installed

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> OcrOptions:
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
    lines: dict[int, bytes] = field(default_factory=dict)  # page (0: an image without pages) -> pack_lines

    def read(self, image, page: int | None, path: Path, pages: int = 1) -> list[Element]:
        """The Elements of one page image; counts the page and reports progress."""
        engine = get_engine(self.options, path)
        started = time.perf_counter()
        lines = engine.read(image)
        release_memory()
        self.seconds += time.perf_counter() - started
        self.pages += 1
        self.engine = engine.name
        if self.on_page is not None:
            self.on_page(page or 1, pages)
        kept = [x for x in lines if x.confidence >= self.options.min_confidence and x.text.strip()]
        self.lines[page or 0] = pack_lines(kept, *image.size)  # kept with the document: its evidence boxes
        return page_elements(kept, page)


def release_memory() -> None:
    """Hand the buffers a page freed back to the system, after each page: a page allocates and frees a few
    hundred MB of images and tensors, which glibc otherwise keeps in fragments. Trimmed once per file
    instead, the 300-page scan of the reliability suite peaked at 2,210 MB for `kb ingest` and its parse
    worker; trimmed per page, 1,369 MB, at the same pages/s (1.77 against 1.74). (Not glibc: nothing to do.)"""
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


class Availability(NamedTuple):
    """Which engine OCR would use ("" for none) and, when none, why not."""

    engine: str
    why: str


def available(options: OcrOptions) -> Availability:
    """The engine these options get, or why none, without loading a model."""
    wanted = options.engine
    if wanted == "off":
        return Availability("", "OCR is off (ingest.ocr: off)")
    problems = []
    if wanted in ("auto", "rapidocr"):
        reason = _rapidocr_missing()
        if not reason:
            return Availability("rapidocr", "")
        problems.append(reason)
    if wanted in ("auto", "tesseract"):
        reason = _tesseract_missing()
        if not reason:
            return Availability("tesseract", "")
        problems.append(reason)
    return Availability("", "; ".join(problems))


def _rapidocr_missing() -> str:
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return ("rapidocr is not installed (pip install 'kb[ocr]'; Python 3.13+ has no wheel of it: install "
                "tesseract instead, apt install tesseract-ocr tesseract-ocr-chi-sim)")
    return ""


def _tesseract_missing() -> str:
    return TESSERACT_MISSING if shutil.which("tesseract") is None else ""


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
    return TesseractEngine.long_side if available(run.options).engine == "tesseract" else RapidOcrEngine.long_side


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
