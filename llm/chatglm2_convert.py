"""Convert a THUDM ChatGLM2-6B / -6B-32K folder into transformers' native GLM format.

THUDM's checkpoints need their own remote code, which fails on transformers 5.x. The math is the
same as `GlmForCausalLM`, so this module renames the parameters, splits the fused q|k|v projection
and writes a `GlmConfig`. Shards are converted one at a time (.bin through a memory map, or
safetensors), so memory never holds two copies of the model. It leaves out loading the model
(chatglm2.py) and first-generation ChatGLM-6B, whose architecture differs (see docs/models.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from kb.errors import ModelError

FORMAT_VERSION = 1
MANIFEST = "kb_convert.json"
TOKENIZER_FILE = "tokenizer.model"

_LAYER = re.compile(r"^transformer\.encoder\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
_DROPPED = {"transformer.rotary_pos_emb.inv_freq"}


def read_thudm_config(src: Path) -> dict:
    """The THUDM config.json of `src`, checked to be a ChatGLM2 one."""
    path = Path(src) / "config.json"
    if not path.is_file():
        raise ModelError(f"{src} has no config.json; point llm.model at the downloaded ChatGLM2 folder")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if "multi_query_group_num" not in cfg and "padded_vocab_size" not in cfg:
        if cfg.get("model_type") == "chatglm" or "position_encoding_2d" in cfg:
            raise ModelError(
                f"{src} holds first-generation ChatGLM-6B, which the chatglm2 backend cannot run: its "
                "remote code needs transformers>=4.27,<4.34; serve it from a separate environment behind "
                "an OpenAI-compatible server and set llm.backend: openai (docs/models.md)"
            )
        raise ModelError(f"{path} is not a THUDM ChatGLM2 config (no multi_query_group_num)")
    return cfg


def glm_config_dict(cfg: dict) -> dict:
    """GlmConfig keyword arguments equivalent to a THUDM ChatGLM2 config."""
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("kv_channels") or cfg["hidden_size"] // heads
    rope: dict = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    ratio = float(cfg.get("rope_ratio", 1) or 1)
    if ratio != 1:
        # ChatGLM2-6B-32K divides positions by rope_ratio: linear interpolation, not base * ratio.
        rope.update(rope_type="linear", factor=ratio)
    return {
        "vocab_size": cfg["padded_vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["ffn_hidden_size"],
        "num_hidden_layers": cfg["num_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("multi_query_group_num", heads)
        if cfg.get("multi_query_attention", True) else heads,
        "head_dim": head_dim,
        "attention_bias": bool(cfg.get("add_qkv_bias", True)),
        "rms_norm_eps": cfg.get("layernorm_epsilon", 1e-5),
        "max_position_embeddings": cfg.get("seq_length", 32768),
        "rope_parameters": rope,
        "eos_token_id": cfg.get("eos_token_id", 2),
        "pad_token_id": cfg.get("pad_token_id", 0),
        "bos_token_id": None,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }


def weight_files(src: Path) -> list[Path]:
    """The checkpoint shards of `src`: safetensors if present, else pytorch .bin."""
    src = Path(src)
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise ModelError(
            f"{src} has no weights (*.safetensors or pytorch_model*.bin); download the whole model folder"
        )
    return files


def iter_shard(path: Path) -> Iterator[tuple[str, object]]:
    """Yield (name, tensor) from one shard without reading the others."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
        return
    # weights_only: no pickle code runs; mmap: tensors page in from disk instead of a full copy.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a pre-zip (legacy) file cannot be memory-mapped: one shard in memory
        state = torch.load(path, map_location="cpu", weights_only=True)
    yield from state.items()


def map_tensor(name: str, tensor, cfg: dict) -> list[tuple[str, object]]:
    """THUDM parameter -> GLM parameters (the fused q|k|v splits into three)."""
    if name in _DROPPED:
        return []
    if name in _TOP_NAMES:
        return [(_TOP_NAMES[name], tensor)]
    m = _LAYER.match(name)
    if m and m.group(2) in _LAYER_NAMES:
        return [(f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}", tensor)]
    if m and m.group(2).startswith("self_attention.query_key_value."):
        kind = m.group(2).rsplit(".", 1)[1]
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("kv_channels") or cfg["hidden_size"] // heads
        groups = cfg.get("multi_query_group_num", heads)
        q, k, v = tensor.split([heads * head_dim, groups * head_dim, groups * head_dim], dim=0)
        prefix = f"model.layers.{m.group(1)}.self_attn"
        return [(f"{prefix}.{p}_proj.{kind}", t.contiguous()) for p, t in zip("qkv", (q, k, v), strict=True)]
    raise ModelError(
        f"unexpected parameter {name!r} in the checkpoint (p-tuning prefixes and other add-ons are "
        "not supported); convert the base ChatGLM2 weights"
    )


def source_key(src: Path) -> str:
    """A fingerprint of the source folder: config and each shard's name, size and mtime."""
    src = Path(src)
    h = hashlib.sha256((src / "config.json").read_bytes())
    for f in weight_files(src) + [src / TOKENIZER_FILE]:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def is_converted(dst: Path, key: str | None = None) -> bool:
    """Whether `dst` holds a finished conversion (of the source with fingerprint `key`)."""
    path = Path(dst) / MANIFEST
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        return False
    return key is None or manifest.get("source_key") == key


def convert(src: Path, dst: Path) -> Path:
    """Convert the THUDM folder `src` into a GLM folder `dst` (replaced atomically)."""
    from safetensors.torch import save_file
    from transformers import GlmConfig

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    cfg = read_thudm_config(src)
    if not (src / TOKENIZER_FILE).is_file():
        raise ModelError(f"{src} has no {TOKENIZER_FILE}; download it with the weights")
    key = source_key(src)
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weight_map: dict[str, str] = {}
        files = weight_files(src)
        for i, shard in enumerate(files, 1):
            out_name = f"model-{i:05d}-of-{len(files):05d}.safetensors"
            tensors = {}
            for name, tensor in iter_shard(shard):
                for new_name, t in map_tensor(name, tensor, cfg):
                    tensors[new_name] = t
                    weight_map[new_name] = out_name
            save_file(tensors, str(tmp / out_name), metadata={"format": "pt"})
            del tensors
        _check_complete(weight_map, cfg, src)
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=1)
        )
        GlmConfig(**glm_config_dict(cfg)).save_pretrained(tmp)
        shutil.copy2(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        manifest = {"format_version": FORMAT_VERSION, "source": str(src), "source_key": key,
                    "rope_ratio": cfg.get("rope_ratio", 1)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _check_complete(weight_map: dict[str, str], cfg: dict, src: Path) -> None:
    expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(cfg["num_layers"]):
        expected |= {f"model.layers.{i}.{n}" for n in _LAYER_NAMES.values()}
        expected |= {f"model.layers.{i}.self_attn.{p}_proj.weight" for p in "qkv"}
    missing = sorted(expected - set(weight_map))
    if missing:
        raise ModelError(
            f"{src} is missing {len(missing)} parameters (first: {missing[0]}); a shard is probably "
            "absent or truncated: download the folder again"
        )


def default_cache_dir(src: Path, models_dir: Path) -> Path:
    """Where a converted copy of `src` lives: next to it when writable, else in `models_dir` ($KB_HOME/models)."""
    src = Path(src).expanduser().resolve()
    if os.access(src.parent, os.W_OK):
        return src.parent / f"{src.name}-kb-glm"
    return Path(models_dir).expanduser() / f"{src.name}-kb-glm"


def ensure_converted(src: Path, cache_dir: Path) -> Path:
    """Convert `src` into `cache_dir` unless an up-to-date conversion is already there."""
    read_thudm_config(src)  # fails early, with the reason, on a folder that is not ChatGLM2
    if not (Path(src) / TOKENIZER_FILE).is_file():
        raise ModelError(f"{src} has no {TOKENIZER_FILE}; download it with the weights")
    if is_converted(cache_dir, source_key(src)):
        return cache_dir
    return convert(src, cache_dir)
