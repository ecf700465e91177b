"""Builders for a tiny random ChatGLM2 checkpoint in THUDM's own format, offline.

Same parameter names and layout as THUDM/chatglm2-6b (fused q|k|v with bias, fused h->4h, MQA with
2 groups, partial rotary), at toy sizes, with a SentencePiece model trained on a few KB of text.
Used by conftest.py and by the GPU script (which has no pytest fixtures).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch

TINY = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "kv_channels": 16,
    "multi_query_group_num": 2,
    "ffn_hidden_size": 96,
    "num_layers": 2,
    "padded_vocab_size": 448,
    "seq_length": 512,
}

_TEXT = """The quick brown fox jumps over the lazy dog. A knowledge base answers questions with cited
sources. Retrieval finds passages; the model writes the answer and names the file and the page.
ChatGLM2 uses multi-query attention with two key-value groups and rotary position embeddings on
half of each head. 你好，世界。知识库回答问题并给出引用。模型读取文档，然后生成答案。
问：今天天气怎么样？答：今天天气很好，适合出门散步。请问还有什么可以帮您？
Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] are common in documents.
"""


def thudm_config(**over) -> dict:
    cfg = {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_softmax_in_fp32": True,
        "fp32_residual_connection": False,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": True,
        "original_rope": True,
        "post_layer_norm": True,
        "rmsnorm": True,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float16",
        **TINY,
    }
    cfg.update(over)
    return cfg


def thudm_state_dict(cfg: dict, seed: int = 0) -> dict:
    """Random weights with THUDM's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    h, v, f = cfg["hidden_size"], cfg["padded_vocab_size"], cfg["ffn_hidden_size"]
    hd, nh, ng = cfg["kv_channels"], cfg["num_attention_heads"], cfg["multi_query_group_num"]
    qkv = (nh + 2 * ng) * hd

    def rnd(*shape, scale=0.15):
        return torch.randn(*shape, generator=g) * scale

    sd = {"transformer.embedding.word_embeddings.weight": rnd(v, h, scale=1.0),
          "transformer.rotary_pos_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, hd // 2, 2).float() / (hd // 2))}
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + rnd(h, scale=0.1)
        sd[p + "self_attention.query_key_value.weight"] = rnd(qkv, h)
        sd[p + "self_attention.query_key_value.bias"] = rnd(qkv, scale=0.1)
        sd[p + "self_attention.dense.weight"] = rnd(h, nh * hd)
        sd[p + "post_attention_layernorm.weight"] = 1 + rnd(h, scale=0.1)
        sd[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * f, h)
        sd[p + "mlp.dense_4h_to_h.weight"] = rnd(h, f)
    sd["transformer.encoder.final_layernorm.weight"] = 1 + rnd(h, scale=0.1)
    sd["transformer.output_layer.weight"] = rnd(v, h, scale=0.3)
    return sd


def train_tokenizer(path: Path) -> None:
    """A small SentencePiece model with byte fallback, like ChatGLM2's (unk 0, bos 1, eos 2)."""
    buf = io.BytesIO()
    lines = [line for line in _TEXT.splitlines() if line.strip()] * 4
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False,
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2,
    )
    path.write_bytes(buf.getvalue())


def write_checkpoint(folder: Path, cfg: dict, sd: dict, fmt: str, tokenizer: Path) -> Path:
    """Save `sd` as two shards (.bin or safetensors) with THUDM's index file and config."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        if fmt == "bin":
            fname = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({n: sd[n].half() for n in part}, folder / fname)
        else:
            from safetensors.torch import save_file

            fname = f"model-{i:05d}-of-00002.safetensors"
            save_file({n: sd[n].half().contiguous() for n in part}, str(folder / fname))
        weight_map.update({n: fname for n in part})
    index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer.model").write_bytes(tokenizer.read_bytes())
    return folder
