"""OCR benchmark: rapidocr against tesseract and a Chatchat-style baseline on one scanned, bilingual PDF,
and `kb ingest` of that PDF.

    tests/bench/fetch_debian_reference.sh          # optional: real text for the pages (else docs/samples)
    python tests/bench/bench_ocr.py [--pages 20] [--engines rapidocr,tesseract,chatchat] [--json]

The PDF is built once, in a temporary folder, with tests/scans.py: A4 pages at 150 dpi that look scanned
(grey, noise, a slight tilt, JPEG), no text layer, alternately Chinese and English, each filled like a
real page with paragraphs of the Debian Reference (zh-cn and en HTML in .corpus/debian-reference; the
texts in docs/samples when it is missing) under a section heading, a small table on every fifth page.
The text, the page starts and the noise come from a fixed seed: every run reads the same pages.

For each engine, warmed up on a page of its own first: `kb.ingest.loaders.load` of the whole PDF, pages/s
by the time inside the engine (OcrRun.seconds) and by the wall time of the load (page rendering and
layout included), and character accuracy (tests/scans.char_accuracy: 1 - edit distance / length, no
whitespace, NFKC) of each page's elements (a table's cells) against the text drawn on it, averaged over
the Chinese pages, the English pages and all. Ratios are against rapidocr (the default) in the same run.
"chatchat" is what Langchain-Chatchat's RapidOCRPDFLoader does with a scanned page: RapidOCR with its
default settings (line direction classifier on) on the page's image at its own resolution, the lines
joined in the order the engine returns them.
Then the end-to-end `KnowledgeBase.ingest` of the PDF with the default settings (ingest.ocr: auto, which
is rapidocr) into a fresh KB home, in a process of its own (cold: the OCR and embedding models load
inside the timing); the embedder comes from --models when it exists (KB_EMBEDDING__CACHE_DIR), else it
is built in the fresh home (about ten seconds more). Figures are from one run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import scans  # noqa: E402

SEED = 20240601
FONT_SIZE, MARGIN = 26, 110  # render_page's defaults, needed here to size the tables
TABLE_EVERY = 5  # pages 3, 8, 13, 18 (1-based) carry a table
_BLOCK = re.compile(r"<h([1-4])[^>]*>(.*?)</h\1>|<p>(.*?)</p>|<table[^>]*>(.*?)</table>", re.S)


@dataclass
class Page:
    lang: str  # "zh" | "en"
    title: str
    paragraphs: list[str]
    table: list[list[str]] | None = None

    @property
    def truth(self) -> str:
        cells = [c for row in self.table or () for c in row]
        return "\n".join([self.title, *self.paragraphs, *cells])


@dataclass
class Source:
    """One language's text: paragraphs in reading order, each with the heading it falls under, and tables."""

    paragraphs: list[tuple[str, str]] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--engines", default="rapidocr,tesseract,chatchat",
                        help="comma-separated; rapidocr is the baseline")
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "debian-reference")
    parser.add_argument("--models", type=Path, default=REPO / ".bench" / "models", help="embedder cache, if built")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ingest", type=Path, help=argparse.SUPPRESS)  # child mode: time kb ingest of this PDF
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(_ingest(args.ingest)))
        return
    if scans.font_path() is None:
        raise SystemExit("no CJK font to draw the pages: apt install fonts-wqy-zenhei")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="kb-ocr-bench-") as folder:
        sources, origin = _sources(args.corpus)
        pages = build_pages(sources, args.pages)
        t0 = time.perf_counter()
        pdf = scans.image_pdf([_render(p, i) for i, p in enumerate(pages)], Path(folder, "scan.pdf"))
        build_s = time.perf_counter() - t0
        warm = scans.image_pdf([_render(build_pages(sources, 2, seed=SEED + 1)[0], 99)], Path(folder, "warm.pdf"))
        result = {"pages": len(pages), "text_from": origin, "pdf_mb": round(pdf.stat().st_size / 1e6, 2),
                  "build_s": round(build_s, 1),
                  "engines": {e: (measure_chatchat if e == "chatchat" else measure_engine)(e, pdf, warm, pages)
                              for e in engines}}
        result["ingest"] = _ingest_in_child(pdf, args.models)
    result["machine"] = machine()
    base = result["engines"].get("rapidocr")
    for row in result["engines"].values():
        row["ratio_engine_pps"] = round(row["engine_pps"] / base["engine_pps"], 3) if base else None
        row["ratio_wall_pps"] = round(row["wall_pps"] / base["wall_pps"], 3) if base else None
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print(result)


# -- pages --------------------------------------------------------------------------------------------
def _clean(fragment: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("\xa0", " ")
    return " ".join(text.split())


def _sources(corpus: Path) -> tuple[dict[str, Source], str]:
    if corpus.is_dir() and sorted(corpus.glob("ch*.en.html")) and sorted(corpus.glob("ch*.zh-cn.html")):
        return {"zh": _html_source(sorted(corpus.glob("ch*.zh-cn.html")), "zh"),
                "en": _html_source(sorted(corpus.glob("ch*.en.html")), "en")}, str(corpus.relative_to(REPO))
    return _sample_sources(REPO / "docs" / "samples"), "docs/samples (no .corpus/debian-reference)"


def _html_source(files: list[Path], lang: str) -> Source:
    """Paragraphs of the language (at least 40 characters; Chinese ones with Chinese in them) and
    tables, in document order, each paragraph under the latest heading that fits on one line."""
    source, heading = Source(), ""
    title_font = _font(int(FONT_SIZE * 1.4))
    for path in files:
        for m in _BLOCK.finditer(path.read_text(encoding="utf-8")):
            if m.group(2) is not None:
                text = _clean(m.group(2))
                if text and title_font.getlength(text) <= 1240 - 2 * MARGIN:
                    heading = text
            elif m.group(3) is not None:
                text = _clean(m.group(3))
                if len(text) >= 40 and scans.is_cjk(text) == (lang == "zh"):
                    source.paragraphs.append((heading, text))
            else:
                rows = [[_clean(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)]
                        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", m.group(4), re.S)]
                source.tables.append(rows)
    return source


def _sample_sources(folder: Path) -> dict[str, Source]:
    """docs/samples' text files, one Source per language: paragraphs split at blank lines, Markdown tables."""
    out = {"zh": Source(), "en": Source()}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".md", ".txt", ".html"):
            continue
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".html":
            raw = "\n\n".join(_clean(x) for x in re.findall(r"<(?:p|li|h\d)[^>]*>(.*?)</", raw, re.S))
        source, heading = out["zh" if scans.is_cjk(raw) else "en"], path.stem
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in raw.splitlines()
                if line.startswith("|") and "---" not in line]
        if rows:
            source.tables.append(rows)
        for block in re.split(r"\n\s*\n", raw):
            lines = [x.lstrip("#-*>` ").strip() for x in block.strip().splitlines() if not x.startswith("|")]
            lines = [x for x in lines if x]
            if lines and len(lines[0]) <= 20:  # a heading line ("# Wired connections", "一、消防安全")
                heading, lines = lines[0], lines[1:]
            if lines:
                source.paragraphs.append((heading, " ".join(lines)))
    return out


def build_pages(sources: dict[str, Source], n: int, seed: int = SEED) -> list[Page]:
    """n pages, Chinese and English in turn, each from a seeded start in its language's text, filled
    with paragraphs until the next would not fit."""
    rng = random.Random(seed)
    pages = []
    for k in range(n):
        lang = "zh" if k % 2 == 0 else "en"
        source = sources[lang]
        table = _table(source, rng) if k % TABLE_EVERY == 2 else None
        start = rng.randrange(len(source.paragraphs))
        pages.append(_fill(Page(lang, source.paragraphs[start][0], [], table), source, start))
    return pages


def _fill(page: Page, source: Source, start: int) -> Page:
    reserve = (len(page.table) * (int(FONT_SIZE * 1.6) + 8) + FONT_SIZE * 2) if page.table else 0
    size = (scans.A4_150DPI[0], scans.A4_150DPI[1] - reserve)  # the table is drawn below, unchecked
    i = start
    for _ in range(len(source.paragraphs)):
        candidate = page.paragraphs + [source.paragraphs[i % len(source.paragraphs)][1]]
        try:
            scans.render_page(candidate, size=size, title=page.title or None, scanned=False)
        except ValueError:
            if page.paragraphs:
                break  # the page is full
        else:
            page.paragraphs = candidate
        i += 1
    return page


def _table(source: Source, rng: random.Random) -> list[list[str]] | None:
    """A header and three rows, three columns, every cell non-empty and inside its column."""
    font, cell = _font(FONT_SIZE), (1240 - 2 * MARGIN) // 3
    fits = []
    for rows in source.tables:
        rows = [r[:3] for r in rows if len(r) >= 3 and all(r[:3])]
        if len(rows) >= 4 and all(font.getlength(c) <= cell - 24 for r in rows[:4] for c in r):
            fits.append(rows[:4])
    return rng.choice(fits) if fits else None


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(scans.font_path(), size)


def _render(page: Page, seed: int):
    return scans.render_page(page.paragraphs, title=page.title or None, table=page.table, seed=seed)


# -- measurements -------------------------------------------------------------------------------------
def measure_engine(name: str, pdf: Path, warm: Path, pages: list[Page]) -> dict:
    """Pages/s and character accuracy of one engine on the PDF, after a warm-up page."""
    from kb.ingest.loaders import load
    from kb.ingest.ocr import OcrOptions, OcrRun

    load(warm, ocr=OcrRun(OcrOptions(engine=name)))
    run = OcrRun(OcrOptions(engine=name))
    t0 = time.perf_counter()
    elements = load(pdf, ocr=run)
    wall = time.perf_counter() - t0
    found: dict[int, list[str]] = {}
    for e in elements:  # a table by its cells: its text joins them with " | "
        found.setdefault(e.page or 0, []).extend([c for row in e.rows for c in row] if e.rows else [e.text])
    scores = [scans.char_accuracy("\n".join(found.get(i + 1, [])), p.truth) for i, p in enumerate(pages)]

    return _row(run.engine, run.pages, run.seconds, wall, scores, pages)


def measure_chatchat(name: str, pdf: Path, warm: Path, pages: list[Page]) -> dict:
    """Langchain-Chatchat's RapidOCRPDFLoader, in effect: RapidOCR() with its defaults on each page's own
    image, the lines joined in the engine's order."""
    import numpy as np
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw
    from rapidocr_onnxruntime import RapidOCR

    ocr = RapidOCR()

    def read(path: Path) -> tuple[list[str], float]:
        texts, seconds = [], 0.0
        doc = pdfium.PdfDocument(str(path))
        for page in doc:
            image = next(o for o in page.get_objects() if o.type == raw.FPDF_PAGEOBJ_IMAGE)
            pixels = np.asarray(image.get_bitmap().to_pil().convert("RGB"))
            t0 = time.perf_counter()
            result, _ = ocr(pixels)
            seconds += time.perf_counter() - t0
            texts.append("\n".join(line[1] for line in result or ()))
        doc.close()
        return texts, seconds

    read(warm)
    t0 = time.perf_counter()
    texts, seconds = read(pdf)
    wall = time.perf_counter() - t0
    scores = [scans.char_accuracy(t, p.truth) for t, p in zip(texts, pages, strict=True)]

    return _row(name, len(texts), seconds, wall, scores, pages)


def _row(engine: str, ocr_pages: int, seconds: float, wall: float, scores: list[float], pages: list[Page]) -> dict:
    """One engine's figures: pages/s and the mean character accuracy per language."""

    def mean(lang: str | None) -> float:
        picked = [s for s, p in zip(scores, pages, strict=True) if lang in (None, p.lang)]
        return round(sum(picked) / len(picked), 4) if picked else float("nan")

    return {"engine": engine, "ocr_pages": ocr_pages, "engine_s": round(seconds, 1), "wall_s": round(wall, 1),
            "engine_pps": round(ocr_pages / seconds, 3), "wall_pps": round(len(pages) / wall, 3),
            "acc_zh": mean("zh"), "acc_en": mean("en"), "acc_all": mean(None), "acc_min": round(min(scores), 4)}


def _ingest_in_child(pdf: Path, models: Path) -> dict:
    env = dict(os.environ)
    if models.is_dir():
        env["KB_EMBEDDING__CACHE_DIR"] = str(models)
    else:
        env.pop("KB_EMBEDDING__CACHE_DIR", None)
    out = subprocess.run([sys.executable, __file__, "--ingest", str(pdf)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _ingest(pdf: Path) -> dict:
    """kb ingest of the PDF into a fresh home, default settings (the child process's side)."""
    from kb import KnowledgeBase
    from kb.config import Settings

    with tempfile.TemporaryDirectory(prefix="kb-ocr-home-") as home:
        settings = Settings(home=Path(home))
        base = KnowledgeBase.open("bench", settings=settings)
        t0 = time.perf_counter()
        report = base.ingest(pdf)
        wall = time.perf_counter() - t0
        base.close()
    cache = settings.embedding.cache_dir
    return {"seconds": round(report.seconds, 1), "wall_s": round(wall, 1), "ocr_pages": report.ocr_pages,
            "ocr_engine": report.ocr_engine, "ocr_s": round(report.ocr_seconds, 1),
            "ocr_share": round(report.ocr_seconds / report.seconds, 3), "chunks": report.chunks_added,
            "pages_per_s": round(report.ocr_pages / report.seconds, 3),
            "embedder_cache": cache or "(none: built in the fresh home)"}


def machine() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def ver(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "missing"

    try:
        tess = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, timeout=30)
        tesseract = (tess.stdout or tess.stderr).splitlines()[0].split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        tesseract = "missing"
    return {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "rapidocr_onnxruntime": ver("rapidocr-onnxruntime"),
            "onnxruntime": ver("onnxruntime"), "tesseract": tesseract}


def _print(result: dict) -> None:
    print(f"OCR benchmark: {result['pages']} scanned A4 pages at 150 dpi (zh and en in turn, tables on "
          f"{len(range(2, result['pages'], TABLE_EVERY))}), text from {result['text_from']}, "
          f"PDF {result['pdf_mb']} MB built in {result['build_s']} s. One run; nothing averaged over runs.\n")
    cols = ("engine_pps", "wall_pps", "ratio_engine_pps", "ratio_wall_pps", "acc_zh", "acc_en", "acc_all",
            "acc_min", "engine_s", "wall_s")
    print(f"{'engine':12s}" + "".join(f"{c:>17s}" for c in cols))
    for name, row in result["engines"].items():
        print(f"{name:12s}" + "".join(f"{row[c]!s:>17s}" for c in cols))
    print("pages/s: engine = pages / time inside the engine; wall = pages / the whole load (rendering, "
          "layout). ratio = that pages/s over rapidocr's. acc = mean character accuracy per page.\n")
    ing = result["ingest"]
    print(f"kb ingest (default settings, ocr {ing['ocr_engine']}, fresh home, own process): {ing['seconds']} s "
          f"for {ing['ocr_pages']} pages = {ing['pages_per_s']} pages/s, {ing['chunks']} chunks, OCR "
          f"{ing['ocr_s']} s = {ing['ocr_share']:.0%} of the time; embedder cache: {ing['embedder_cache']}")
    m = result["machine"]
    print(f"\nmachine: {m['cores']} cores (1-min load {m['load_avg_1m']} at the end), Python {m['python']}, "
          f"rapidocr-onnxruntime {m['rapidocr_onnxruntime']}, onnxruntime {m['onnxruntime']}, "
          f"tesseract {m['tesseract']}")


if __name__ == "__main__":
    main()
