"""GPU check for ChatGLM2-6B-32K on GlmForCausalLM: NF4 vs bf16, 32K prefill and decode.

Run on a CUDA machine:  python tests/gpu/bench_chatglm2_gpu.py  (prints one JSON object).
It first runs the real chatglm2 backend on a tiny THUDM-format checkpoint (convert, load at fp32,
NF4 and 8-bit, compare logits with the reference math, generate). Then, for NF4 and bf16, it builds
a full-size ChatGLM2-6B-32K-shaped model with random weights directly on the GPU (layer by layer,
no download), and times a chunked 32K-token prefill and greedy decoding through kb's own token
loop (kb.llm.generation), the same code the backend uses: two prefill chunk sizes, decoding at
32K context, three rounds of short-context decoding and a profile of 8 steps. NF4 runs again last
because the first 4-bit model of a process decoded slower (docs/models.md). `--tiny` shrinks everything so the
script can be checked on a CPU (NF4 through bitsandbytes' CPU code; the backend's own 4/8-bit
loading is CUDA-only).
Random weights make the timings and memory real and the text meaningless.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "llm")]

THUDM_32K = {  # THUDM/chatglm2-6b-32k config.json, the fields the converter reads
    "padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696, "num_layers": 28,
    "num_attention_heads": 32, "multi_query_group_num": 2, "kv_channels": 128, "add_qkv_bias": True,
    "layernorm_epsilon": 1e-5, "seq_length": 32768, "rope_ratio": 16, "eos_token_id": 2, "pad_token_id": 0,
    "multi_query_attention": True,
}
GB = 1e9


def import_kb_llm() -> None:
    """Make `kb.llm` importable from a bare checkout (pyproject maps the folder llm -> kb.llm).

    Without an install, bare package modules are made for `kb` and `kb.llm` so that the GPU
    machine needs none of kb's retrieval dependencies.
    """
    try:
        import kb.llm.generation  # noqa: F401
        return
    except ImportError:
        pass
    import importlib.util
    import types

    for name, folder in (("kb", ROOT / "kb"), ("kb.llm", ROOT / "llm")):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        sys.modules[name] = module
    sys.modules["kb"].llm = sys.modules["kb.llm"]
    importlib.util.find_spec("kb.llm.generation")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mem(device: str, peak: bool = True) -> float | None:
    if not device.startswith("cuda"):
        return None
    return round((torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / GB, 3)


def to_nf4(linear: torch.nn.Linear, device: str, double_quant: bool = True) -> torch.nn.Module:
    """Replace a bf16 Linear by a bitsandbytes NF4 one (bf16 compute), as from_pretrained does."""
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=linear.weight.dtype, compress_statistics=double_quant,
                          quant_type="nf4", device="meta")
    q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=double_quant,
                                 quant_type="nf4", module=q).to(device)
    if linear.bias is not None:
        q.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
    return q


def materialize(module: torch.nn.Module, device: str, gen: torch.Generator) -> None:
    """Allocate a meta module on `device` and fill it with random weights (norms at 1)."""
    module.to_empty(device=device)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("layernorm.weight") or name == "weight" and p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)


def build_random(config, mode: str, device: str):
    """GlmForCausalLM with random weights built on `device` one layer at a time.

    mode: bf16; nf4 (what the backend loads: NF4, bf16 compute, double-quantized block scales);
    nf4-nodq (the same with plain fp32 block scales, for comparison).
    """
    from transformers import GlmForCausalLM
    from transformers.models.glm.modeling_glm import GlmRotaryEmbedding

    gen = torch.Generator(device=device).manual_seed(0)
    old = torch.get_default_dtype()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = GlmForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    for layer in model.model.layers:
        materialize(layer, device, gen)
        if mode.startswith("nf4"):
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if isinstance(child, torch.nn.Linear):
                        setattr(parent, name, to_nf4(child, device, double_quant=mode != "nf4-nodq"))
    for part in (model.model.embed_tokens, model.model.norm, model.lm_head):
        materialize(part, device, gen)
    model.model.rotary_emb = GlmRotaryEmbedding(config).to(device)
    return model.eval()


def bench_mode(config, mode: str, device: str, prefill_len: int, decode_len: int, chunks: list[int]) -> dict:
    from kb.llm.generation import cache_keyword, forward_last, generate_ids, new_cache, prefill

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model = build_random(config, mode, device)
    sync(device)
    out = {"load_s": round(time.perf_counter() - t, 2), "weights_gb": mem(device, peak=False),
           "peak_after_load_gb": mem(device)}
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, config.vocab_size, (prefill_len,), generator=gen).tolist()
    with torch.inference_mode():
        prefill(model, ids[:256], new_cache(model), chunk=chunks[0])  # warm-up: kernels, cuBLAS handles
        for chunk in chunks:
            cache = logits = None
            gc.collect()
            sync(device)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            cache = new_cache(model)
            t = time.perf_counter()
            logits = prefill(model, ids, cache, chunk=chunk)
            sync(device)
            out[f"prefill_chunk{chunk}"] = {
                "tokens": prefill_len, "s": round(time.perf_counter() - t, 3), "peak_gb": mem(device),
                "reserved_gb": round(torch.cuda.max_memory_reserved() / GB, 3) if device != "cpu" else None,
                "finite": bool(torch.isfinite(logits).all())}
        kw, step, n = cache_keyword(model), logits.argmax(-1, keepdim=True), min(64, decode_len)
        t = time.perf_counter()
        for _ in range(n):  # decoding with the full 32K context in the cache
            step = forward_last(model, step, cache, kw).argmax(-1, keepdim=True)
        sync(device)
        out["decode_tok_s_at_32k"] = round(n / (time.perf_counter() - t), 2)
        del cache, logits
    list(generate_ids(model, ids[:16], max_new_tokens=8))  # warm-up at short context
    rates = []
    for _ in range(3):  # three rounds: does a slow model speed up with time?
        sync(device)
        t = time.perf_counter()
        got = list(generate_ids(model, ids[:16], max_new_tokens=decode_len))
        sync(device)
        rates.append(round(len(got) / (time.perf_counter() - t), 2))
    out.update(decode_tokens=len(got), decode_tok_s_rounds=rates, decode_tok_s=sorted(rates)[1],
               sm_mhz_after=sm_clock(device), profile=profile_decode(model, ids[:16], device))
    del model
    return out


def profile_decode(model, ids: list[int], device: str, steps: int = 8) -> dict:
    """Where 8 decode steps spend their time: GPU busy ms per token, and the top GPU and CPU ops."""
    from torch.profiler import ProfilerActivity, profile

    from kb.llm.generation import generate_ids

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        list(generate_ids(model, ids, max_new_tokens=steps))
        sync(device)
    wall = time.perf_counter() - t
    events = prof.key_averages()

    def dev(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0

    gpu_us = sum(dev(e) for e in events)
    top_gpu = sorted(events, key=dev, reverse=True)[:5]
    top_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {"wall_ms_per_token": round(wall * 1e3 / steps, 2), "gpu_busy_ms_per_token": round(gpu_us / 1e3 / steps, 2),
            "top_gpu_us": {e.key[:60]: round(dev(e) / steps, 1) for e in top_gpu},
            "top_cpu_us": {e.key[:60]: round(e.self_cpu_time_total / steps, 1) for e in top_cpu}}


def sm_clock(device: str) -> int | None:
    """The GPU's current SM clock in MHz, when NVML can tell."""
    try:
        return torch.cuda.clock_rate() if device.startswith("cuda") else None
    except Exception:  # noqa: BLE001 - only a diagnostic
        return None


def smoke_backend(device: str) -> dict:
    """The real backend on a tiny THUDM checkpoint: convert, load (fp32 / NF4 / 8-bit), generate."""
    import chatglm2_reference as ref
    import thudm_fixtures as fx

    from kb.llm.base import Message
    from kb.llm.chatglm2 import ChatGLM2Backend

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fx.train_tokenizer(tmp / "tokenizer.model")
        cfg = fx.thudm_config(rope_ratio=16, seq_length=2048)
        src = fx.write_checkpoint(tmp / "tiny", cfg, fx.thudm_state_dict(cfg), "bin", tmp / "tokenizer.model")
        ids = list(range(5, 45))
        b = ChatGLM2Backend.from_folder(src, device=device, dtype="float32", cache_dir=tmp / "c", temperature=0)
        with torch.inference_mode():
            got = b.model(input_ids=torch.tensor([ids], device=b.model.device)).logits[0].double().cpu()
        out["fp32_max_abs_err_vs_reference"] = float((got - ref.logits(src, ids)).abs().max())
        msgs = [Message("user", "你好")]
        out["fp32_text"] = b.generate(msgs, max_new_tokens=8)
        quantized = ("4", "8") if device.startswith("cuda") else ()
        for q in quantized:
            qb = ChatGLM2Backend.from_folder(src, device=device, quantize=q, cache_dir=tmp / "c", temperature=0)
            kinds = sorted({type(m).__name__ for m in qb.model.modules() if "Linear" in type(m).__name__})
            out[f"q{q}"] = {"linear_types": kinds, "text": qb.generate(msgs, max_new_tokens=8),
                            "streamed_equal": "".join(qb.stream(msgs, max_new_tokens=8)) ==
                            qb.generate(msgs, max_new_tokens=8)}
    return out


def guarded(fn, *args) -> dict:
    """fn(*args), or the error and the end of its traceback."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, not hidden
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-1500:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="small shapes on the CPU, to check the script")
    p.add_argument("--prefill", type=int, default=32768)
    p.add_argument("--decode", type=int, default=128, help="tokens per decode round (three rounds)")
    p.add_argument("--chunks", default="1024,2048", help="prefill chunk sizes to time; the first is "
                   "llm.transformers.prefill_chunk's default")
    p.add_argument("--modes", default="nf4,bf16,nf4")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    a = p.parse_args()
    import_kb_llm()
    import transformers
    from transformers import GlmConfig

    from kb.llm.chatglm2_convert import glm_config_dict

    device = "cpu" if a.tiny or not torch.cuda.is_available() else "cuda"
    thudm = dict(THUDM_32K)
    if a.tiny:
        thudm.update(padded_vocab_size=512, hidden_size=64, ffn_hidden_size=128, num_layers=2,
                     num_attention_heads=4, kv_channels=16)
        a.prefill, a.decode, a.chunks = min(a.prefill, 300), min(a.decode, 16), "64,128"
    config = GlmConfig(**glm_config_dict(thudm))
    report: dict = {"card": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import bitsandbytes

        report["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        report["bitsandbytes"] = None
    # Each part reports its own failure and the rest still runs: GPU time is scarce.
    report["smoke"] = guarded(smoke_backend, device)
    for mode in a.modes.split(","):
        chunks = [int(c) for c in a.chunks.split(",")]
        key = mode if mode not in report else f"{mode}#2"  # a mode named twice checks order effects
        report[key] = guarded(bench_mode, config, mode, device, a.prefill, a.decode, chunks)
    bf16 = report.get("bf16", {}).get("decode_tok_s")
    for key in [k for k in report if k.startswith("nf4")]:
        if bf16 and "decode_tok_s" in report[key]:
            report[f"{key}_over_bf16_decode"] = round(report[key]["decode_tok_s"] / bf16, 3)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()
