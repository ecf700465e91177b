"""Scanned documents built from known text, for the OCR tests and benchmarks.

Text is drawn with a real CJK font (Debian's fonts-wqy-zenhei, which has Latin glyphs too) onto a white
page, then made to look scanned: a little grey, a little noise, a slight tilt, JPEG. `image_pdf` wraps
pages as an image-only PDF (no text layer), as a scanner writes it. Each builder returns the text it drew,
so a test can measure character accuracy against it.
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

FONT_PATHS = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc")
A4_150DPI = (1240, 1754)
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")


def font_path() -> str | None:
    return next((p for p in FONT_PATHS if Path(p).exists()), None)


def _font(size: int):
    from PIL import ImageFont

    path = font_path()
    if path is None:
        raise FileNotFoundError("no CJK font: install Debian's fonts-wqy-zenhei")
    return ImageFont.truetype(path, size)


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy line breaks: Chinese may break between any two characters, English between words."""
    tokens = re.findall(r"[A-Za-z0-9][\w.,;:!?%'()/-]*\s*|\s+|.", text)
    lines, line = [], ""
    for token in tokens:
        if font.getlength(line + token.rstrip()) <= width or not line:
            line += token
        else:
            lines.append(line.rstrip())
            line = token.lstrip()
    if line.strip():
        lines.append(line.rstrip())
    return lines


def render_page(paragraphs: list[str], *, size=A4_150DPI, font_size: int = 26, margin: int = 110,
                title: str | None = None, table: list[list[str]] | None = None, seed: int = 0,
                scanned: bool = True):
    """A page image holding `title`, then `paragraphs` (a blank line between them; one that starts with
    "# " is a heading), then `table`."""
    from PIL import Image, ImageDraw, ImageFilter

    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    width = size[0] - 2 * margin
    y = margin
    line_height = int(font_size * 1.6)
    if title:
        big = _font(int(font_size * 1.4))
        draw.text((margin, y), title, font=big, fill=20)
        y += int(line_height * 1.8)
    font = _font(font_size)
    heading = _font(int(font_size * 1.3))
    for para in paragraphs:
        if para.startswith("# "):  # a heading inside the page
            y += line_height // 3
            draw.text((margin, y), para[2:], font=heading, fill=20)
            y += int(line_height * 1.4)
            continue
        for line in _wrap(para, font, width):
            if y + line_height > size[1] - margin:
                raise ValueError("the text does not fit on one page")
            draw.text((margin, y), line, font=font, fill=25)
            y += line_height
        y += line_height // 2
    if table:
        columns = len(table[0])
        cell = width // columns
        y += line_height // 2
        for row in table:
            for i, text in enumerate(row):
                draw.text((margin + i * cell + 8, y + 6), text, font=font, fill=25)
            draw.line((margin, y, margin + width, y), fill=60, width=2)
            y += line_height + 8
        draw.line((margin, y, margin + width, y), fill=60, width=2)
    if not scanned:
        return page.convert("RGB")
    rng = random.Random(seed)
    page = page.rotate(rng.uniform(-0.8, 0.8), resample=Image.BICUBIC, fillcolor=255, expand=False)
    page = page.filter(ImageFilter.GaussianBlur(0.6))
    noise = Image.effect_noise(size, 18).point(lambda v: (v - 128) // 3 + 128)
    from PIL import ImageChops

    page = ImageChops.add(page, noise, scale=1.0, offset=-128)
    return page.point(lambda v: min(255, int(v * 0.93 + 12))).convert("RGB")


def photo_of(page, seed: int = 0):
    """A phone photo of a printed notice: perspective, uneven light, a grey background, JPEG-able."""
    from PIL import Image

    rng = random.Random(seed)
    w, h = page.size
    dx, dy = int(w * 0.04), int(h * 0.03)
    quad = (rng.randint(0, dx), rng.randint(0, dy), rng.randint(0, dx), h - rng.randint(0, dy),
            w - rng.randint(0, dx), h - rng.randint(0, dy), w - rng.randint(0, dx), rng.randint(0, dy))
    warped = page.transform((w, h), Image.QUAD, quad, resample=Image.BICUBIC, fillcolor=(150, 150, 140))
    light = Image.linear_gradient("L").resize((w, h)).point(lambda v: 200 + v * 55 // 255)
    shade = Image.merge("RGB", (light, light, light.point(lambda v: v * 95 // 100)))
    from PIL import ImageChops

    return ImageChops.multiply(warped, shade)


def image_pdf(pages, path: Path, dpi: int = 150, quality: int = 80) -> Path:
    """An image-only PDF (each page one JPEG), as a scanner writes it."""
    first, *rest = [p.convert("RGB") for p in pages]
    first.save(path, "PDF", resolution=dpi, save_all=True, append_images=rest, quality=quality)
    return path


def normalise(text: str) -> str:
    """Text compared by characters: NFKC (full-width punctuation and letters as ASCII), no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def char_accuracy(found: str, truth: str) -> float:
    """1 − edit distance / length of the truth, on normalised text (1.0 = every character right)."""
    from rapidfuzz.distance import Levenshtein

    a, b = normalise(found), normalise(truth)
    return max(0.0, 1 - Levenshtein.distance(a, b) / max(1, len(b)))


def is_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


# -- docs/samples: a signed policy scanned back, and a phone photo of a notice ------------------------
SAMPLE_POLICY = [
    ("会议室与访客管理规定",
     ["一、会议室须通过办公系统预约，每次预约最长四小时。预约后十五分钟内无人签到的，系统自动释放会议室。",
      "二、访客须至少提前一个工作日由接待人在办公系统登记，到访当天凭身份证在前台领取访客卡，离开时交回。",
      "三、访客在办公区内须由接待人全程陪同，不得进入机房和财务室。"]),
    ("会议室一览",
     ["各会议室的容量和设备如下表。视频会议须提前一天联系行政部调试设备。"],
     [["会议室", "容纳人数", "设备"], ["长江厅", "20 人", "投影仪、视频会议"], ["黄河厅", "12 人", "电视屏幕"],
      ["珠江厅", "6 人", "白板"]]),
    ("Meeting Room and Visitor Rules (English summary)",
     ["Book meeting rooms in the office system, for at most four hours at a time. A room nobody checks in to "
      "within fifteen minutes is released automatically.",
      "Register visitors in the office system at least one working day ahead. Visitors collect a visitor "
      "card at reception with their ID and return it when they leave.",
      "Approved by the Administration Department. Effective from 1 March 2026."]),
]
SAMPLE_NOTICE = ("停电通知",
                 ["因配电房年度检修，本周六上午八点至下午两点，A座全楼停电，电梯停止运行。",
                  "请在周五下班前保存工作、关闭电脑，并拔下个人电器的插头。",
                  "# Power outage notice",
                  "Building A has no power this Saturday from 8:00 to 14:00 while the substation is serviced. "
                  "Save your work and switch off your computer before you leave on Friday.",
                  "行政部 Administration Department"])


def write_samples(folder: Path) -> list[Path]:
    """The scanned samples of docs/samples (regenerate with `python tests/scans.py docs/samples`)."""
    pages = []
    for seed, (title, paragraphs, *table) in enumerate(SAMPLE_POLICY):
        pages.append(render_page(paragraphs, title=title, table=table[0] if table else None, seed=seed + 40))
    policy = image_pdf([p.convert("L") for p in pages], folder / "会议室与访客管理规定-扫描件.pdf", quality=60)
    title, paragraphs = SAMPLE_NOTICE
    notice = folder / "power-outage-notice.jpg"
    photo_of(render_page(paragraphs, title=title, size=(1240, 1000), seed=50), seed=51).save(notice, quality=70)
    return [policy, notice]


if __name__ == "__main__":
    import sys

    for written in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/samples")):
        print(f"{written} ({written.stat().st_size / 1024:.0f} kB)")
