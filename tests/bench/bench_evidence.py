"""Evidence view benchmark: time to the first view of a cited passage's page, cold and from the cache.

    python tests/bench/bench_evidence.py [--pages 40] [--scan-pages 3] [--json]

Two documents are built in a temporary KB home: a text PDF of --pages A4 pages (reportlab, an English and a
Chinese paragraph on every page) and an image-only scanned PDF of --scan-pages pages (tests/scans.py), and both
are ingested (the scan through OCR). Then, for a passage in the middle of each:
- cold: the first `kb.evidence.view` in this process with an empty image cache (pypdfium2, PIL and, for the
  scan, the OCR engine load inside the timing; the KB is open and its embedder loaded);
- cold, libraries loaded: another passage's first view (cache miss; what every new citation costs later);
- warm: the first passage again (from the cache: the original's size and mtime checked, the record read);
- `kb show` in a fresh process, with an empty cache and then a warm one (the CLI's whole cost, start-up included);
- scan only: cold_ocr, another passage's first view (libraries loaded) with the OCR lines ingest kept removed from
  the KB (a KB built before kb kept them: the page is read with OCR again), against cold_loaded, and the bytes of
  the kept lines per OCR'd page.
Memory: the peak RSS of a fresh process that opens an image-only PDF of --big-scan pages and draws its middle page
with kb/evidence_pdf (what a view of a scan page does but the OCR), against the same for a 1-page PDF: a bounded
view costs the same whatever the document's length.
Ratios are against the cold in-process time measured in the same run. Figures are from one run; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import evidence_docs  # noqa: E402
import scans  # noqa: E402

EN = "Inspection {n}: the pump house on pier {n} was checked and its valves were greased on schedule."
ZH = "第{n}次检查：{n}号码头的泵房已检查完毕，阀门按计划加注了润滑油。"


def text_pdf(path: Path, pages: int) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(TTFont("WQY", evidence_docs.WQY, subfontIndex=0))
    c = canvas.Canvas(str(path), pagesize=A4)
    for n in range(1, pages + 1):
        y = 780
        for line in range(12):
            c.setFont("Helvetica", 11)
            c.drawString(60, y, EN.format(n=n * 100 + line))
            c.setFont("WQY", 11)
            c.drawString(60, y - 18, ZH.format(n=n * 100 + line))
            y -= 54
        c.showPage()
    c.save()


def scan_pdf(path: Path, pages: int) -> None:
    images = [scans.render_page([ZH.format(n=n * 100 + i) for i in range(6)], seed=n) for n in range(1, pages + 1)]
    scans.image_pdf(images, path)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cli_show(home: Path, chunk_id: int) -> float:
    env = {**os.environ, "KB_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kb.cli", "show", str(chunk_id), "--kb", "bench"], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def measure(kb, home: Path, doc_name: str, prefix: str) -> dict[str, float]:
    from kb.evidence import view

    doc = next(d for d in kb.documents() if d.path.endswith(doc_name))
    hits = kb.chunks(doc.doc_id)
    middle = [h for h in hits if h.page == (max(h.page or 1 for h in hits) + 1) // 2] or hits
    first, other = middle[0], middle[-1] if len(middle) > 1 else hits[-1]
    cache = home / "cache" / "evidence"
    shutil.rmtree(cache, ignore_errors=True)
    out = {f"{prefix}_cold": timed(lambda: view(kb, first.chunk_id))}
    out[f"{prefix}_cold_loaded"] = timed(lambda: view(kb, other.chunk_id))
    out[f"{prefix}_warm"] = min(timed(lambda: view(kb, first.chunk_id)) for _ in range(5))
    shutil.rmtree(cache, ignore_errors=True)
    out[f"{prefix}_cli_cold"] = cli_show(home, first.chunk_id)
    out[f"{prefix}_cli_warm"] = cli_show(home, first.chunk_id)
    found = view(kb, first.chunk_id)
    out[f"{prefix}_png_kb"] = os.path.getsize(found.image) / 1024
    out[f"{prefix}_boxes"] = len(found.boxes)
    if found.kind == "scan":
        db = kb._store._db  # the local store's meta.sqlite
        sizes = [r[0] for r in db.execute("SELECT length(data) FROM page_lines WHERE doc_id=?", (doc.doc_id,))]
        out[f"{prefix}_lines_bytes_per_page"] = sum(sizes) / max(1, len(sizes))
        with db:
            db.execute("DELETE FROM page_lines WHERE doc_id=?", (doc.doc_id,))
        shutil.rmtree(cache, ignore_errors=True)
        out[f"{prefix}_cold_ocr"] = timed(lambda: view(kb, other.chunk_id))
    return out


PEAK = """
import re, sys
from pathlib import Path
from kb.evidence_pdf import draw, get_page, open_pdf, render_page, render_scale
path = Path(sys.argv[1])
pdf = open_pdf(path)
page = get_page(pdf, (len(pdf) + 1) // 2, path)
scale = render_scale(*page.get_size())
draw(render_page(page, scale), scale, [(50, 50, 300, 80)], [(50, 50, 300, 65)])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (the bench, gigabytes)
print(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
"""


def peak_kib(pdf: Path) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, str(pdf)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1])


def memory(work: Path, pages: int) -> dict[str, float]:
    page = scans.render_page([ZH.format(n=i) for i in range(6)], seed=1)
    one, many = work / "one.pdf", work / "many.pdf"
    scans.image_pdf([page], one)
    scans.image_pdf([page] * pages, many)
    return {"peak_rss_1_page_mib": peak_kib(one) / 1024, f"peak_rss_{pages}_pages_mib": peak_kib(many) / 1024,
            "big_scan_mib": many.stat().st_size / (1 << 20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--scan-pages", type=int, default=3)
    parser.add_argument("--big-scan", type=int, default=300, help="pages of the PDF for the memory figure (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from kb import KnowledgeBase
    from kb.config import Settings

    work = Path(tempfile.mkdtemp(prefix="kb-bench-evidence-"))
    try:
        docs, home = work / "docs", work / "home"
        docs.mkdir()
        text_pdf(docs / "inspections.pdf", args.pages)
        if args.scan_pages:
            scan_pdf(docs / "scanned.pdf", args.scan_pages)
        with KnowledgeBase.open("bench", settings=Settings(home=home)) as kb:
            report = kb.ingest(docs)
            assert not report.failed, report.failed
            results = measure(kb, home, "inspections.pdf", "text_pdf")
            if args.scan_pages:
                results.update(measure(kb, home, "scanned.pdf", "scan"))
        if args.big_scan:
            results.update(memory(work, args.big_scan))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"evidence view, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"text PDF of {args.pages} pages, scan of {args.scan_pages} pages")
    for prefix in ("text_pdf", "scan"):
        if f"{prefix}_cold" not in results:
            continue
        cold = results[f"{prefix}_cold"]
        print(f"\n{prefix}: {results[f'{prefix}_boxes']} boxes, PNG {results[f'{prefix}_png_kb']:.0f} KB")
        for key in ("cold", "cold_loaded", "warm", "cli_cold", "cli_warm", "cold_ocr"):
            if f"{prefix}_{key}" in results:
                value = results[f"{prefix}_{key}"]
                print(f"  {key:12s} {value * 1000:9.1f} ms   {value / cold:7.3f} x cold")
        if f"{prefix}_lines_bytes_per_page" in results:
            print(f"  OCR lines kept per page: {results[f'{prefix}_lines_bytes_per_page']:.0f} bytes")
    if args.big_scan:
        print(f"\npeak RSS drawing the middle page: 1-page scan {results['peak_rss_1_page_mib']:.0f} MiB, "
              f"{args.big_scan}-page scan ({results['big_scan_mib']:.0f} MB) "
              f"{results[f'peak_rss_{args.big_scan}_pages_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
