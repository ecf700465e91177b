"""ChatGLM2's forward pass written out directly from THUDM's modeling code, in float64.

Independent of kb's converter and of transformers: it reads the THUDM-named tensors and does
RMSNorm, the fused q|k|v projection, interleaved rotary embeddings on the first half of each head
(positions divided by rope_ratio, as in chatglm2-6b-32k), multi-query attention, SwiGLU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_thudm(folder: Path) -> tuple[dict, dict]:
    cfg = json.loads((folder / "config.json").read_text())
    sd = {}
    for f in sorted(folder.glob("*.bin")):
        sd.update(torch.load(f, weights_only=True))
    for f in sorted(folder.glob("*.safetensors")):
        from safetensors.torch import load_file

        sd.update(load_file(str(f)))
    return cfg, {k: v.double() for k, v in sd.items()}


def rms(x, w, eps):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rope(x, pos, base: float):
    """THUDM's apply_rotary_pos_emb: pairs (x0,x1),(x2,x3).. of the first half of the head rotate."""
    hd = x.shape[-1]
    rot = hd // 2
    theta = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.outer(pos, theta)  # T x rot/2
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    xr = x[..., :rot].reshape(*x.shape[:-1], rot // 2, 2)
    a, b = xr[..., 0], xr[..., 1]
    out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    return torch.cat([out, x[..., rot:]], dim=-1)


def logits(folder: Path, ids: list[int], *, rope_mode: str = "linear") -> torch.Tensor:
    """T x vocab logits. rope_mode 'linear' divides positions by rope_ratio; 'base' multiplies base."""
    cfg, sd = load_thudm(folder)
    ratio = float(cfg.get("rope_ratio", 1))
    nh, ng, hd = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"]
    eps = cfg["layernorm_epsilon"]
    T = len(ids)
    pos = torch.arange(T, dtype=torch.float64)
    base = 10000.0
    if rope_mode == "linear":
        pos = pos / ratio
    else:
        base = base * ratio
    x = sd["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"], eps)
        qkv = h @ sd[p + "self_attention.query_key_value.weight"].T + sd[p + "self_attention.query_key_value.bias"]
        q, k, v = qkv.split([nh * hd, ng * hd, ng * hd], dim=-1)
        q, k, v = q.view(T, nh, hd), k.view(T, ng, hd), v.view(T, ng, hd)
        q, k = rope(q, pos, base), rope(k, pos, base)
        k = k.repeat_interleave(nh // ng, dim=1)  # head j reads group j // (nh/ng)
        v = v.repeat_interleave(nh // ng, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / hd**0.5 + mask
        att = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(T, nh * hd)
        x = x + att @ sd[p + "self_attention.dense.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate, up = (h @ sd[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        x = x + (torch.nn.functional.silu(gate) * up) @ sd[p + "mlp.dense_4h_to_h.weight"].T
    x = rms(x, sd["transformer.encoder.final_layernorm.weight"], eps)
    return x @ sd["transformer.output_layer.weight"].T
