"""A PDF with an English and a Chinese sentence at known places, and the measures the evidence tests take.

The PDF is written with reportlab in a real CJK TrueType font (Debian's fonts-wqy-zenhei), so its text layer is
what a word processor writes. Each sentence's box is computed from the font's own metrics (the drawn string's
width, the font's ascent and descent at its size), in points from the page's top-left corner: the known answer
that the boxes kb finds are compared with.
"""

from __future__ import annotations

from pathlib import Path

WQY = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
EN = "The lighthouse keeper logs the fog horn tests every Tuesday morning."
ZH = "灯塔看守人每周二上午记录雾笛测试结果。"
OTHER = "Page one is about the harbour's opening hours only."
PAGE_HEIGHT = 841.89  # A4, points
SIZE = 14


def make_pdf(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Write the PDF (page 1: OTHER; page 2: EN above ZH) and return each sentence's box on page 2."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    if "WQY" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("WQY", WQY, subfontIndex=0))
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont("Helvetica", 12)
    c.drawString(72, 780, OTHER)
    c.showPage()
    known = {}
    for text, font, x, baseline in ((EN, "Helvetica", 72, 700), (ZH, "WQY", 90, 560)):
        c.setFont(font, SIZE)
        c.drawString(x, baseline, text)
        ascent, descent = pdfmetrics.getAscentDescent(font, SIZE)
        width = pdfmetrics.stringWidth(text, font, SIZE)
        known[text] = (x, A4[1] - baseline - ascent, x + width, A4[1] - baseline - descent)
    c.showPage()
    c.save()
    return known


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def union(boxes) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def yellow_pixels(png: Path):
    """The (x, y) of the pixels painted with the highlight's translucent yellow (over paper or over ink)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    on_paper = (r > 235) & (g > 225) & (b > 120) & (b < 175)
    on_ink = (r > 60) & (g > 50) & (b < 25) & (abs(r - g) < 30)
    ys, xs = np.nonzero(on_paper | on_ink)
    return xs, ys


def tide_table(path: Path) -> list[str]:
    """A one-page A4 PDF of 40 numbered lines, 18 pt apart from a baseline 800 pt up the page (several chunks on
    one page); its lines, top to bottom."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    lines = [f"Entry {i:02d} of the tide table gives high water near pier {i} at {i % 12 + 1} o'clock."
             for i in range(1, 41)]
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont("Helvetica", 11)
    for i, line in enumerate(lines):
        c.drawString(72, 800 - 18 * i, line)
    c.showPage()
    c.save()
    return lines
