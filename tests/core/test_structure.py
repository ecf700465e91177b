"""How the code is laid out, as a newcomer reads it: every path a docstring or comment names is a real file or
folder of this repository (written as the folder holds it: `ingest/pipeline.py`, not the import name's
`kb/ingest/pipeline.py`), and kb/ keeps few modules of its own (the rest live in subpackages by stage)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kb", "ingest", "llm", "app", "server")
# A path: a top-level folder of the repository, then a file (with a suffix), a folder (trailing /) or a glob.
# Quoted examples ('docs/2024/*', a user's folder) and placeholders ($KB_HOME/..., <kb>/...) are not paths here.
PATH = re.compile(r"(?<![\w./<$~'-])((?:kb|ingest|llm|app|server|tests|docs)/[\w./*-]*(?:\.\w+|/|\*))")


def named_paths() -> list[tuple[str, int, str]]:
    """(file, line, path) for every path the package code names."""
    found = []
    for folder in PACKAGES:
        for source in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
                found += [(str(source.relative_to(ROOT)), n, m.group(1).rstrip(".")) for m in PATH.finditer(line)]
    return found


def missing_paths(named: list[tuple[str, int, str]]) -> list[str]:
    """'file:line: path' for each named path that is no file or folder (a glob: that matches none)."""
    return [f"{f}:{n}: {p}" for f, n, p in named if not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]


def test_every_path_the_code_names_exists():
    named = named_paths()
    assert len(named) > 50  # the pattern finds the code's references (kb/answer/chain.py, ingest/pipeline.py, ...)
    missing = missing_paths(named)
    assert not missing, "paths that do not exist (write them as the repository holds them):\n" + "\n".join(missing)


def test_kb_keeps_at_most_twelve_modules_of_its_own():
    modules = sorted(p.name for p in (ROOT / "kb").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 12, modules
    assert {"answer", "retrieval", "doctor", "text", "stores"} <= {p.name for p in (ROOT / "kb").iterdir() if p.is_dir()}
