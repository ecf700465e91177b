"""Old binary Office files (.doc, .wps, .rtf, .xls, .ppt), read by converting them with LibreOffice.

`load_legacy` has LibreOffice (`soffice --headless --convert-to`) write the modern format (.docx, .xlsx,
.pptx) into a temporary folder and hands that file to the modern loader, so old files come out as the same
Elements (headings, tables, slides) as new ones. No network is used. Each run gets a LibreOffice profile
folder of kb's own, never the user's ~/.config/libreoffice, so a LibreOffice window the user has open is left
alone; a process reuses its profiles (one per conversion running at once) and removes them at exit.

Measured (LibreOffice 7.4, Debian 12, 2 cores, a one-page .doc to .docx, `convert`): 1.1-1.2 s with a new
profile, 0.9-1.0 s with a reused one; nearly all of it is LibreOffice starting, paid once per file (no
server is kept running). A small .xls or .ppt takes about as long.

What it leaves out: password-protected files (LibreOffice cannot open them without the password; not
tested here, the timeout bounds the wait), macros (not run: LibreOffice's default security blocks them),
and anything the modern loader does not read (pictures, embedded objects). A .wps is read by content: WPS
Writer files are Word binaries and work (tested); Microsoft Works .wps goes through LibreOffice's libwps
(not tested). A file that is neither an Office container nor text (random bytes) is refused before
LibreOffice runs, since LibreOffice would open it as a plain-text page of garbage.
Debian needs libreoffice-writer (.doc/.wps/.rtf), libreoffice-calc (.xls) and libreoffice-impress (.ppt);
libreoffice-core alone converts nothing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kb.errors import ParseError

from . import orphans

LEGACY = {".doc": ".docx", ".wps": ".docx", ".rtf": ".docx", ".xls": ".xlsx", ".ppt": ".pptx"}
# The LibreOffice part that reads each old format: (Debian package suffix, its library in program/).
_COMPONENT = {".doc": ("writer", "sw"), ".wps": ("writer", "sw"), ".rtf": ("writer", "sw"),
              ".xls": ("calc", "sc"), ".ppt": ("impress", "sd")}
_NOISE = ("Warning: failed to launch javaldx",)  # printed on every run where no Java is installed
# How the files LibreOffice reads by these names begin: OLE2 (Word/Excel/PowerPoint 97-2003, WPS, Works),
# zip (a .docx renamed), RTF, Word for DOS / Word 2, BIFF2-4 sheets, a UTF-16 or UTF-8 byte order mark.
_SIGNATURES = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"PK\x03\x04", b"{\\rtf", b"\x31\xbe\x00\x00",
               b"\xdb\xa5", b"\x09\x00\x04\x00", b"\x09\x02", b"\x09\x04", b"\xff\xfe", b"\xfe\xff",
               b"\xef\xbb\xbf")
_CONTROL = bytes(range(0, 9)) + bytes(range(14, 27)) + bytes(range(28, 32))


def load_legacy(path: Path, load_modern: Callable[[Path], list], timeout: float = 120) -> list:
    """Convert `path` to its modern format in a temporary folder and return `load_modern(converted)`."""
    target = LEGACY.get(path.suffix.lower())
    if target is None:
        raise ParseError(str(path), f"not an old Office format ('{path.suffix}'; kb converts {', '.join(LEGACY)})")
    with tempfile.TemporaryDirectory(prefix="kb-office-") as folder:
        return load_modern(convert(path, target, Path(folder), timeout))


def soffice_path() -> str | None:
    """LibreOffice's command, if it is installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert(path: Path, target_suffix: str, out_dir: Path, timeout: float = 120) -> Path:
    """Convert `path` with LibreOffice to `out_dir/<stem><target_suffix>` (replacing such a file); return it.

    Raises ParseError naming the fix when LibreOffice is missing, takes longer than `timeout` seconds
    (its processes are killed), or writes nothing (a damaged file)."""
    _check_looks_like_office(path)
    soffice = soffice_path()
    if soffice is None:
        raise ParseError(str(path), _install_hint(path, target_suffix))
    fmt = target_suffix.lstrip(".").lower()
    out_dir.mkdir(parents=True, exist_ok=True)
    converted = out_dir / f"{path.stem}.{fmt}"
    converted.unlink(missing_ok=True)
    with _profile() as profile:
        stderr = _run([soffice, "--headless", "--norestore", "--nologo", "--nolockcheck",
                       f"-env:UserInstallation={profile.as_uri()}", "--convert-to", fmt,
                       "--outdir", str(out_dir.resolve()), str(path.resolve())], path, timeout)
    if converted.is_file() and converted.stat().st_size > 0:
        return converted
    raise ParseError(str(path), _failure_reason(path, target_suffix, soffice, stderr))


def _check_looks_like_office(path: Path) -> None:
    """Refuse what is neither an office file nor text: LibreOffice opens any unknown bytes as plain text and
    would "convert" a damaged file into pages of garbage. (Text, HTML and XML saved as .doc/.xls are real:
    Word and Excel wrote them, and LibreOffice reads them.)"""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise ParseError(str(path), "empty file")
    if head.startswith(_SIGNATURES):
        return
    if sum(head.count(c) for c in _CONTROL) > len(head) // 50:
        raise ParseError(str(path), f"damaged or not a real {path.suffix.lower()}: it is no Office, RTF, HTML or "
                                    "text file, so LibreOffice cannot convert it")


def _run(cmd: list[str], path: Path, timeout: float) -> str:
    """Run soffice under orphans.run: its process group (soffice.bin included) is killed on a timeout, on
    Ctrl-C, and when this process dies."""
    try:
        return orphans.run(cmd, timeout).stderr
    except subprocess.TimeoutExpired:
        raise ParseError(str(path), f"LibreOffice took longer than {timeout:g} s to convert it (a huge, damaged or "
                                    "password-protected file?); save it in a modern format "
                                    f"({LEGACY.get(path.suffix.lower(), 'docx')}) and ingest that") from None


def _install_hint(path: Path, target_suffix: str) -> str:
    suffix = path.suffix.lower()
    part = _COMPONENT.get(suffix, ("writer", "sw"))[0]
    kind = "old format" if suffix == ".rtf" else "old binary format"
    return (f"{kind} ({suffix}); install LibreOffice (Debian/Ubuntu: apt install libreoffice-{part}; "
            f"macOS: brew install --cask libreoffice) or save it as {target_suffix}")


def _failure_reason(path: Path, target_suffix: str, soffice: str, stderr: str) -> str:
    suffix = path.suffix.lower()
    part, lib = _COMPONENT.get(suffix, ("writer", "sw"))
    program = Path(soffice).resolve().parent
    if (program / "soffice.bin").exists() and not any(program.glob(f"lib{lib}lo.*")):
        # Debian's libreoffice-core alone starts, then says "source file could not be loaded" for everything.
        return (f"LibreOffice is installed without its {part.capitalize()} part, which reads {suffix} files; "
                f"install libreoffice-{part} (Debian/Ubuntu: apt install libreoffice-{part}) or save it as "
                f"{target_suffix}")
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith(_NOISE)]
    detail = f": {lines[-1]}" if lines else ""
    return f"LibreOffice could not read it (damaged or not a real {suffix}?){detail}"


# -- private profiles --------------------------------------------------------------------------------
# A fresh profile is written on first start; one in use by a running soffice must not be shared (a second
# soffice would hand its job to the first and exit). So: a pool of idle profiles per process, under one
# temporary folder that is removed at exit. A forked child starts with a pool of its own.
class _Profiles:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.root: Path | None = None
        self.idle: list[Path] = []
        self.made = 0

    def take(self) -> Path:
        with self.lock:
            if self.idle:
                return self.idle.pop()
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix=f"kb-soffice-{os.getpid()}-"))
                _remove_at_exit(self.root)
            self.made += 1
            return self.root / f"profile-{self.made}"

    def give_back(self, profile: Path) -> None:
        with self.lock:
            self.idle.append(profile)


def _remove_at_exit(root: Path) -> None:
    """Remove `root` when this process ends, and never from a forked child (the parent still uses it)."""
    from multiprocessing import util

    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(root, ignore_errors=True)

    atexit.register(remove)
    # multiprocessing's children leave through os._exit, which skips atexit but runs its finalizers.
    util.Finalize(None, remove, exitpriority=0)


_profiles = _Profiles()


def _reset_after_fork() -> None:
    global _profiles
    _profiles = _Profiles()


os.register_at_fork(after_in_child=_reset_after_fork)


@contextmanager
def _profile() -> Iterator[Path]:
    """An idle private profile; one that was in use when a conversion was killed is thrown away."""
    profile = _profiles.take()
    try:
        yield profile
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    _profiles.give_back(profile)
