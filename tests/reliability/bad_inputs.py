"""Generators for the files a user's folder really contains: damaged, hostile, huge, oddly named.

Each generator writes one file (or folder) and returns what a test expects of it: `marker`, a phrase
that must be searchable if kb ingests the file (None when kb must report it instead), and `reason`, a
fragment of the reason kb must give when it skips the file. Nothing here needs the network.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Expect:
    path: Path
    marker: str | None  # searchable text if the file is ingested
    reason: str | None = None  # expected fragment of the failure reason (None: the file must be ingested)


def _pdf_bytes(text: str, encrypt: str | None = None) -> bytes:
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    enc = pdfencrypt.StandardEncryption(encrypt, ownerPassword=encrypt + "-owner", strength=128) if encrypt else None
    c = canvas.Canvas(buf, encrypt=enc)
    c.setFont("Helvetica", 12)
    c.drawString(60, 750, text)
    c.showPage()
    c.save()
    return buf.getvalue()


def pdfs(folder: Path) -> list[Expect]:
    good = _pdf_bytes("The zeppelin hangar roof was painted silver in spring.")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(4096))
    (folder / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (folder / "encrypted.pdf").write_bytes(_pdf_bytes("The vault combination is secret.", encrypt="hunter2"))
    (folder / "fine.pdf").write_bytes(good)
    return [
        Expect(folder / "corrupt.pdf", None, "PDF"),
        Expect(folder / "truncated.pdf", None, "PDF"),
        Expect(folder / "encrypted.pdf", None, "encrypted"),
        Expect(folder / "fine.pdf", "zeppelin hangar roof painted silver"),
    ]


def empty_and_binary(folder: Path) -> list[Expect]:
    (folder / "empty.txt").write_bytes(b"")
    (folder / "empty.md").write_bytes(b"")
    (folder / "random.txt").write_bytes(bytes(range(256)) * 4 + os.urandom(60_000))
    (folder / "elf.txt").write_bytes(b"\x7fELF\x02\x01\x01" + os.urandom(20_000))
    return [
        Expect(folder / "empty.txt", None, "no text"),
        Expect(folder / "empty.md", None, "no text"),
        Expect(folder / "random.txt", None, "binary"),
        Expect(folder / "elf.txt", None, "binary"),
    ]


# (file name, text, encoding, query). Each text holds words found in no other file.
ENCODED = [
    ("gbk.txt", "景德镇的瓷器作坊每天清晨开窑，工匠们检查釉色是否均匀。", "gbk", "景德镇瓷器釉色"),
    ("gb18030.txt", "𠀀字之后，苏州园林的假山用太湖石堆叠而成，讲究瘦漏透皱。", "gb18030", "苏州园林太湖石"),
    ("big5.txt", "臺南的廟宇每年舉行盛大的媽祖遶境活動，信眾徒步跟隨。", "big5", "媽祖遶境"),
    ("utf16le.txt", "云南的普洱茶饼需要在干燥通风的地方存放多年。", "utf-16-le", "普洱茶饼存放"),
    ("utf16be.txt", "内蒙古草原上的牧民在夏天转场到高山牧场。", "utf-16-be", "牧民转场"),
    ("shiftjis.txt", "京都の庭園では、苔の手入れが毎朝行われています。", "shift_jis", "苔の手入れ"),
]


def encodings(folder: Path) -> list[Expect]:
    out = []
    for name, text, encoding, query in ENCODED:
        # Repeat the sentence: detectors need more than a dozen bytes to tell GBK from Big5.
        (folder / name).write_bytes(((text + "\n") * 8).encode(encoding))
        out.append(Expect(folder / name, query))
    mixed = "First line about the copper kettle.\r\nSecond line\rThird line about walnut shelves.\nEnd.\r\n"
    (folder / "mixed-endings.txt").write_bytes(mixed.encode("utf-8"))
    out.append(Expect(folder / "mixed-endings.txt", "walnut shelves"))
    return out


def nested_html(folder: Path, depth: int = 10_000) -> list[Expect]:
    body = "<div>" * depth + "The marmalade recipe needs bitter Seville oranges." + "</div>" * depth
    (folder / "nested.html").write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    return [Expect(folder / "nested.html", "marmalade Seville oranges")]


def docx_zip_bomb(folder: Path, expanded_mb: int = 1024) -> list[Expect]:
    """A .docx whose document.xml inflates to `expanded_mb` MB (a few MB on disk)."""
    path = folder / "bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="xml" ContentType="application/xml"/>'
                   '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                   'officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("_rels/.rels",
                   '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                   'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
                   '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                    b'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>')
            block = b" " * (1 << 20)
            for _ in range(expanded_mb):
                f.write(block)
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return [Expect(path, None, "zip bomb")]


def symlink_loops(folder: Path) -> list[Expect]:
    loop = folder / "loop"
    loop.mkdir()
    (loop / "self").symlink_to(loop, target_is_directory=True)  # a folder that contains itself
    (folder / "a-link.txt").symlink_to(folder / "b-link.txt")
    (folder / "b-link.txt").symlink_to(folder / "a-link.txt")  # a file symlink loop
    return [Expect(folder / "a-link.txt", None, "symbolic links"), Expect(folder / "b-link.txt", None, "symbolic links")]


def unreadable(folder: Path) -> list[Expect]:
    """A file and a folder with mode 000 (only a non-root user is stopped by that)."""
    locked = folder / "locked.txt"
    locked.write_text("The locked drawer holds the spare lighthouse keys.", encoding="utf-8")
    locked.chmod(0)
    closed = folder / "closed"
    closed.mkdir()
    (closed / "inside.txt").write_text("Nobody may read the closed folder.", encoding="utf-8")
    closed.chmod(0)
    return [Expect(locked, None, "Permission denied"), Expect(closed, None, "Permission denied")]


ODD_NAMES = [
    ("name with spaces.txt", "The amber streetlamp flickers on foggy nights.", "amber streetlamp"),
    ("new\nline.txt", "A heron waited motionless in the reed bed.", "heron reed bed"),
    ("ünïcødé-文件名.txt", "The cobbler resoled seven pairs of boots.", "cobbler resoled boots"),
    ("-leading-dash.txt", "Dandelion wine ferments slowly in the cellar.", "dandelion wine cellar"),
    ("--help.md", "# Kite\n\nThe red kite circled above the quarry.", "kite circled quarry"),
]


def odd_names(folder: Path) -> list[Expect]:
    out = []
    for name, text, query in ODD_NAMES:
        (folder / name).write_text(text, encoding="utf-8")
        out.append(Expect(folder / name, query))
    return out


def single_long_line(folder: Path, megabytes: float = 20, name: str = "one-line.txt") -> list[Expect]:
    """One line, no newline, no sentence end. Past kb's text limit (5 M characters) it must be refused."""
    words = "the quick brown fox jumps over the lazy dog near the riverbank "
    size = int(megabytes * (1 << 20))
    line = (words * (size // len(words) + 1))[:size]
    path = folder / name
    path.write_text("Wombats dig burrows with their strong claws " + line, encoding="utf-8")
    if size > 5_000_000:
        return [Expect(path, None, "too much text")]
    return [Expect(path, "wombats dig burrows")]


def huge_text(folder: Path, megabytes: int = 200) -> list[Expect]:
    path = folder / "huge.txt"
    para = ("Line {i}: the archive ledger records shipment {i} of tea, silk and porcelain.\n").format
    with open(path, "w", encoding="utf-8") as f:
        f.write("The walrus census happens every August.\n")
        i = 0
        while f.tell() < megabytes << 20:
            f.write("".join(para(i=i + k) for k in range(1000)))
            i += 1000
    return [Expect(path, None, "too large")]


def tiny_files(folder: Path, count: int = 20_000) -> list[Expect]:
    sub = folder / "tiny"
    sub.mkdir()
    for i in range(count):
        (sub / f"t{i:05d}.txt").write_text(f"tiny note {i} about item q{i}x", encoding="utf-8")
    return [Expect(sub / "t12345.txt", "q12345x")]


def images(folder: Path) -> list[Expect]:
    """Pictures a scanner or phone leaves behind: a 400-megapixel blank, damaged bytes, a cut-off JPEG, a
    photo with no text, and one good scan."""
    import scans
    from PIL import Image

    Image.new("1", (20000, 20000), 1).save(folder / "huge.png")  # 400 megapixels; small on disk
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(8000))
    good = folder / "ferry.jpg"
    scans.render_page(["The night ferry to the island leaves the north pier at eleven."], size=(1000, 300),
                      margin=40, seed=7).save(good, quality=80)
    (folder / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    scans.render_page([], size=(900, 700), seed=8).save(folder / "no-text.png")
    return [
        Expect(folder / "huge.png", None, "image too large"),
        Expect(folder / "corrupt.png", None, "not a readable image"),
        Expect(folder / "cut.jpg", None, "damaged image"),
        Expect(folder / "no-text.png", None, "no text found"),
        Expect(good, "night ferry island north pier"),
    ]


def long_scan(path: Path, pages: int = 300) -> list[tuple[int, str]]:
    """An image-only PDF of `pages` pages, each a scanned line with its own code; [(page, code), ...]."""
    import scans

    lines = [(n, f"QX{n:04d}") for n in range(1, pages + 1)]
    images = [scans.render_page([f"Ledger page {n}: crate {code} was delivered to dock {n % 9 + 1}."],
                                size=(827, 1169), margin=70, font_size=18, seed=n).convert("L") for n, code in lines]
    scans.image_pdf(images, path, dpi=100, quality=60)
    return lines

