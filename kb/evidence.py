"""See the evidence where it stands: a cited passage located on its page and drawn there, highlighted.

`view(kb, chunk_id, sentence)` is the one use case the CLI (`kb show`) and the HTTP route
(`GET /v1/kbs/{kb}/passages/{id}/view`) share. It finds the passage, checks that its original file is still the
one that was ingested (same path, same content hash: moved or changed files are an error that says so, never
boxes drawn on the wrong text), and then, by kind:
- a PDF page with a text layer: pdfium's character boxes for the passage (kb/evidence_pdf.py);
- a scanned PDF page or a photo: the page image, with the boxes of the OCR lines ingest kept for the page, or
  (a KB built before kb kept them, a Milvus KB) of the lines OCR reads at view time where an OCR engine is
  installed (kb/evidence_scan.py), else without highlight and a note that says so;
- other formats (Word, HTML, Markdown, mail, slides, sheets): no image; the section's text with the cited
  sentence's offsets (`context`, `mark`).
The cited sentence is filled yellow and the rest of the passage outlined lightly; without a sentence the whole
passage is the highlight. Images are cached by (document hash, page, chunk, sentence) under
`$KB_HOME/cache/evidence/`, at most CACHE_MAX_BYTES (oldest used first out). One page is opened and drawn at a
time, so memory stays bounded on a 300-page scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kb import evidence_pdf, evidence_scan
from kb.errors import PassageNotFoundError, SourceChangedError
from kb.evidence_pdf import Rect, squeeze
from kb.text.sentences import SENTENCE_SPAN
from kb.types import DocumentInfo, Hit

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase

FORMAT_VERSION = 2  # of the cached JSON records ({"parts": [...]}); a change makes new cache keys
CACHE_MAX_BYTES = 256 << 20
CONTEXT_CHARS = 4000  # of a section's text around the passage, for formats without pages
IMAGE_TYPES = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp")
_pdfium = threading.Lock()  # pdfium is not thread-safe; the server renders in a thread pool


@dataclass(frozen=True)
class Box:
    """A box on the page, in page units (PDF points, or an image's own pixels) from the top-left corner."""

    x0: float
    y0: float
    x1: float
    y1: float
    cited: bool  # part of the cited sentence (filled), or only of the passage (outlined)

    def pixels(self, scale: float) -> list[int]:
        """The box on the rendered image (scale: image pixels per page unit)."""
        return [round(self.x0 * scale), round(self.y0 * scale), round(self.x1 * scale), round(self.y1 * scale)]


@dataclass(frozen=True)
class Evidence:
    """A passage where it stands: its page image and boxes, or (formats without pages) its section's text."""

    chunk_id: int
    doc_id: str
    path: str
    page: int | None
    section: str
    text: str  # the passage
    sentence: str  # the highlighted sentence, in the passage's own words ("" = the whole passage)
    kind: str  # "pdf" (text layer), "scan" (a scanned PDF page), "image" (a photo), "text" (no page image)
    page_size: tuple[float, float] | None = None  # in page units
    scale: float = 1.0  # image pixels per page unit
    boxes: tuple[Box, ...] = ()
    image: str | None = None  # the PNG's path (in the cache)
    note: str = ""  # why there is no highlight, or how the sentence was matched
    context: str = ""  # formats without pages: the section's text around the passage
    mark: tuple[int, int] | None = None  # the sentence (or passage) within `context`

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each box with its page coordinates and its pixel coordinates on the image."""
        data = asdict(self)
        data["boxes"] = [{**asdict(b), "pixels": b.pixels(self.scale)} for b in self.boxes]
        if self.page_size is not None:
            data["image_size"] = [round(self.page_size[0] * self.scale), round(self.page_size[1] * self.scale)]
        return data


def passage(kb: KnowledgeBase, chunk_id: int) -> Hit:
    """The stored passage of that id, or PassageNotFoundError."""
    hits, at = kb.around(chunk_id, 0) if 0 <= chunk_id < 1 << 63 else ([], -1)  # ids are positive int64
    if at < 0:
        raise PassageNotFoundError(f"no passage {chunk_id} in KB '{kb.name}': it never existed, or its document "
                                   f"was changed or removed since (`kb search ... --kb {kb.name} --json` and "
                                   "`kb ask --json` give current passage ids)")
    return hits[at]


def source(kb: KnowledgeBase, hit: Hit) -> tuple[Path, DocumentInfo]:
    """The passage's original file, checked to be the version that was ingested (SourceChangedError if not)."""
    info = kb.document(hit.doc_id)
    if info is None:
        raise PassageNotFoundError(f"passage {hit.chunk_id}'s document is no longer in KB '{kb.name}'")
    path = Path(info.path)
    fix = f"run `kb ingest {path} --kb {kb.name}` again (or ingest it from its new place)"
    try:
        stat = path.stat()
    except OSError as e:
        raise SourceChangedError(f"the original of passage {hit.chunk_id}, {path}, is missing ({e.strerror or e}): "
                                 f"it was moved or deleted after it was ingested; {fix}") from e
    if stat.st_size == info.size and stat.st_mtime == info.mtime:
        return path, info  # untouched since ingest (ingest records size and mtime with the hash)
    from kb.ingest.parse import file_hash  # ingest's parser modules load only for a file whose stat changed

    if file_hash(path) != info.content_hash:
        raise SourceChangedError(f"{path} changed after it was ingested (its content hash differs), so passage "
                                 f"{hit.chunk_id}'s boxes would point at the wrong text; {fix}")
    return path, info


def view(kb: KnowledgeBase, chunk_id: int, sentence: str | None = None) -> Evidence:
    """Passage `chunk_id` on its page: boxes, and the page image with them drawn (cached), or its section's text."""
    return view_page(kb, [(chunk_id, sentence)])[0]


def view_page(kb: KnowledgeBase, cites: Sequence[tuple[int, str | None]]) -> tuple[Evidence, ...]:
    """Several cited passages of one page, (chunk id, quoted sentence) each, drawn on one image: every Evidence
    returned names the same PNG and holds its own boxes. The page is opened, rendered and OCR'd once. Passages of
    formats without pages come back as their sections' text, one by one. ValueError if they are not on one page."""
    hits = [passage(kb, chunk_id) for chunk_id, _ in cites]
    if len({(h.doc_id, h.page) for h in hits}) > 1:
        raise ValueError(f"view_page draws passages of one page of one document, not {[c for c, _ in cites]}")
    path, info = source(kb, hits[0])
    bases = []
    for hit, (_, sentence) in zip(hits, cites):
        cited, note = cited_sentence(hit.text, sentence)
        bases.append(Evidence(hit.chunk_id, hit.doc_id, str(path), hit.page, hit.section, hit.text, cited, "text",
                              note=note))
    kind = info.file_type.lower()
    if kind != "pdf" and kind not in IMAGE_TYPES:
        return tuple(_in_section(kb, hit, base) for hit, base in zip(hits, bases))
    folder = kb.settings.home_dir / "cache" / "evidence"
    # the quote as given, not only the sentence it chose: the record's note says how the two differ
    parts = ";".join(f"{b.chunk_id}:{b.sentence}:{s}" for b, (_, s) in zip(bases, cites))
    key = hashlib.blake2b(f"{FORMAT_VERSION}:{info.content_hash}:{hits[0].page}:{parts}".encode(),
                          digest_size=16).hexdigest()
    cached = _cached(folder, key)
    if cached is not None and len(cached) == len(bases):
        return cached
    image, found = _draw_page(kb, path, kind, hits[0].page or 1, bases)
    return _store(folder, key, image, found)


def _draw_page(kb: KnowledgeBase, path: Path, kind: str, number: int, bases: list[Evidence]):
    """The page (a PDF's page `number`, or the photo) drawn with every passage's boxes, and each passage's
    Evidence: boxes from the text layer, else (a scan, a photo) from the OCR lines ingest kept, or read at view
    time, once."""
    if kind == "pdf":
        with _pdfium:
            pdf = evidence_pdf.open_pdf(path)
            try:
                page = evidence_pdf.get_page(pdf, number, path)
                width, height = page.get_size()
                chars, rects, shown = evidence_pdf.page_chars(page)
                found = [evidence_pdf.passage_boxes(chars, rects, b.text, b.sentence or None, shown) for b in bases]
                scale = evidence_pdf.render_scale(width, height)
                image = evidence_pdf.render_page(page, scale)
                page.close()
            finally:
                pdf.close()
    else:
        image, scale = evidence_scan.open_photo(path)
        width, height = image.width / scale, image.height / scale
        found = [([], []) for _ in bases]
    lines = None
    parts, outline, cited = [], [], []
    for base, (mine, filled) in zip(bases, found):
        note, what = base.note, "pdf" if mine else ("scan" if kind == "pdf" else "image")
        if not mine:  # a scanned page (or a text layer that does not hold the passage), a photo: OCR's lines
            lines = (lines or evidence_scan.stored_lines(kb, base.doc_id, base.page, width, height)
                     or evidence_scan.read_lines(image, scale, kb.settings))
            texts, rects, why = lines
            mine, filled = evidence_scan.line_boxes(texts, rects, base.text, base.sentence) if not why else ([], [])
            note = _join(note, why or ("" if mine else evidence_scan.NOT_ON_PAGE))
        parts.append(replace(base, kind=what, page_size=(width, height), scale=scale, boxes=_boxes(mine, filled),
                             note=note))
        outline += mine
        cited += filled
    return evidence_pdf.draw(image, scale, outline, cited), parts


def _boxes(outline: list[Rect], cited: list[Rect]) -> tuple[Box, ...]:
    """The passage's lines that are not also the sentence's (outlined), then the sentence's (filled)."""
    return tuple([Box(*r, cited=False) for r in outline if r not in cited] + [Box(*r, cited=True) for r in cited])


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def cited_sentence(text: str, sentence: str | None) -> tuple[str, str]:
    """The passage's own words to highlight for a quoted sentence, and a note when they were guessed: the quote
    itself when the passage holds it, else the passage sentence sharing most characters with it."""
    quote = (sentence or "").strip()
    if not quote:
        return "", ""
    if squeeze(quote)[0] in squeeze(text)[0]:
        return quote, ""
    want = set(squeeze(quote)[0])
    spans = [m.group().strip() for m in SENTENCE_SPAN.finditer(text) if m.group().strip()]
    best = max(spans, key=lambda s: len(want & set(squeeze(s)[0])) / max(1, len(set(squeeze(s)[0]) | want)),
               default="")
    if not best or not want & set(squeeze(best)[0]):
        return "", f"the passage does not hold {quote!r}: the whole passage is highlighted"
    return best, "the passage does not quote the sentence word for word: its closest sentence is highlighted"


def _in_section(kb: KnowledgeBase, hit: Hit, base: Evidence) -> Evidence:
    """Formats without pages: the section's text around the passage, with the cited sentence's offsets."""
    same = [c for c in kb.chunks(hit.doc_id) if c.section == hit.section]
    start = max(min((c.char_start for c in same), default=hit.char_start), hit.char_start - CONTEXT_CHARS // 2)
    end = min(max((c.char_end for c in same), default=hit.char_end), hit.char_end + CONTEXT_CHARS // 2)
    context = kb.span_text(hit.doc_id, start, end)
    at = hit.char_start - start
    if context is None:  # the document's text is gone: the passage alone
        context, at = hit.text, 0
    mark = (at, at + hit.char_end - hit.char_start)
    if base.sentence:
        found = context.find(base.sentence, mark[0])
        if found >= 0:
            mark = (found, found + len(base.sentence))
    return replace(base, context=context, mark=mark)


def _cached(folder: Path, key: str) -> tuple[Evidence, ...] | None:
    png, record = folder / f"{key}.png", folder / f"{key}.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        os.utime(png)  # last used: what the cache's bound evicts first
    except (OSError, ValueError):
        return None
    return tuple(_from_dict(d, str(png)) for d in data["parts"])


def _store(folder: Path, key: str, image, found: list[Evidence]) -> tuple[Evidence, ...]:
    """Write the PNG and its record (atomically: a reader never sees half a file), then bound the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{key}.png"
    part = folder / f"{key}.{os.getpid()}.{threading.get_ident()}.part"
    image.save(part, format="PNG", compress_level=3)
    os.replace(part, png)
    found = [replace(f, image=str(png)) for f in found]
    records = [f.to_dict() for f in found]
    for data in records:
        data.pop("image_size", None)
    part.write_text(json.dumps({"parts": records}, ensure_ascii=False), encoding="utf-8")
    os.replace(part, folder / f"{key}.json")
    _bound(folder)
    return tuple(found)


def _from_dict(data: dict[str, Any], image: str) -> Evidence:
    data = {k: v for k, v in data.items() if k in Evidence.__dataclass_fields__}
    data["boxes"] = tuple(Box(**{k: b[k] for k in ("x0", "y0", "x1", "y1", "cited")}) for b in data["boxes"])
    data["page_size"] = tuple(data["page_size"]) if data["page_size"] else None
    data["mark"] = tuple(data["mark"]) if data["mark"] else None
    return Evidence(**{**data, "image": image})


def _bound(folder: Path) -> None:
    """Delete the least recently used images (and their records) while the folder holds more than its bound."""
    files = []
    for entry in os.scandir(folder):
        if entry.name.endswith(".png"):
            st = entry.stat()
            files.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in files)
    for _, size, name in sorted(files):
        if total <= CACHE_MAX_BYTES:
            break
        for p in (name, name[:-4] + ".json"):
            try:
                os.remove(p)
            except OSError:
                pass
        total -= size
