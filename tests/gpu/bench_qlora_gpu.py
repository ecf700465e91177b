"""GPU check for QLoRA on the full ChatGLM2-6B shape: 20 training steps, peak VRAM and steps/s.

Run on a CUDA machine:  python tests/gpu/bench_qlora_gpu.py  (prints one JSON object).
It builds a ChatGLM2-6B-shaped `GlmForCausalLM` with random weights directly on the GPU, NF4 with
double-quantized scales and bf16 compute (bench_chatglm2_gpu.build_random, the way from_pretrained
quantizes), then trains through kb's own fine-tuning code (`kb.llm.finetune.wrap`, `optimizer_for`,
`train_step`: peft's kbit preparation, LoRA r=8 on every attention/MLP linear, activation
checkpointing, bf16 autocast, AdamW) on random token sequences of --seq tokens (the first half
masked like a prompt) for --steps steps. Peak VRAM is `torch.cuda.max_memory_allocated`; steps/s is
given over all steps and without the first (kernel warm-up). Random weights make time and memory
real and the loss meaningless. `--tiny` shrinks the model and runs on the CPU to check the code
path: QLoRA through bitsandbytes' CPU NF4 kernels when bitsandbytes is installed, else plain LoRA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chatglm2_gpu import GB, THUDM_32K, build_random, import_kb_llm, mem, sync  # noqa: E402

CHATGLM2_6B = {k: v for k, v in THUDM_32K.items() if k != "rope_ratio"}  # same shapes; -6B has no rope_ratio


def run(a) -> dict:
    import peft
    import transformers
    from transformers import GlmConfig

    from kb.llm.chatglm2_convert import glm_config_dict
    from kb.llm.finetune import TrainConfig, optimizer_for, train_step, wrap
    from kb.llm.finetune_data import IGNORE, Example

    cuda = torch.cuda.is_available() and not a.tiny
    device = "cuda" if cuda else "cpu"
    thudm = dict(CHATGLM2_6B)
    if a.tiny:
        thudm.update(padded_vocab_size=512, hidden_size=64, ffn_hidden_size=128, num_layers=2,
                     num_attention_heads=4, kv_channels=16)
        a.seq, a.steps = min(a.seq, 64), min(a.steps, 4)
    config = GlmConfig(**glm_config_dict(thudm))
    nf4 = cuda or (a.tiny and _has_bitsandbytes())  # bitsandbytes 0.50 also has CPU NF4 kernels
    method = "qlora" if nf4 else "lora"
    report = {"card": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "peft": peft.__version__, "method": method,
              "seq_tokens": a.seq, "steps": a.steps, "lora_r": a.r}
    if nf4:
        import bitsandbytes

        report["bitsandbytes"] = bitsandbytes.__version__
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model = build_random(config, "nf4" if nf4 else "bf16", device)
    if nf4:  # what from_pretrained(quantization_config=NF4) marks, and peft reads to pick its 4-bit LoRA layer
        model.is_loaded_in_4bit = True
    sync(device)
    report.update(build_s=round(time.perf_counter() - t, 2), weights_gb=mem(device, peak=False))
    cfg = TrainConfig(method=method, steps=a.steps, batch_size=1, grad_accum=1, lr=2e-4, lora_r=a.r,
                      gradient_checkpointing=True)
    net = wrap(model, cfg)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    layers = sorted({f"{type(m).__module__.split('.')[-1]}.{type(m).__name__}" for m in net.modules()
                     if hasattr(m, "lora_A")})  # bnb.Linear4bit for QLoRA: LoRA over the NF4 linears
    report.update(trainable_params=trainable, lora_layers=layers, after_wrap_gb=mem(device, peak=False))
    optimizer, scheduler = optimizer_for(net, cfg)
    gen = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(4):
        ids = torch.randint(3, config.vocab_size, (a.seq,), generator=gen).tolist()
        examples.append(Example(ids, [IGNORE] * (a.seq // 2) + ids[a.seq // 2 :]))

    def batches():
        i = 0
        while True:
            yield [i % len(examples)]
            i += 1

    it, times, losses = batches(), [], []
    net.train()
    for _ in range(a.steps):
        t = time.perf_counter()
        losses.append(round(train_step(net, examples, 0, it, cfg, optimizer, scheduler), 4))
        sync(device)
        times.append(time.perf_counter() - t)
    rest = times[1:] or times
    report.update(losses=losses, step_s=[round(x, 3) for x in times],
                  steps_per_s=round(len(times) / sum(times), 3),
                  steps_per_s_after_first=round(len(rest) / sum(rest), 3),
                  tokens_per_s_after_first=round(a.seq * len(rest) / sum(rest), 1),
                  peak_vram_gb=mem(device), gb_unit=f"{GB:.0e} bytes")
    if cuda:
        report["reserved_gb"] = round(torch.cuda.max_memory_reserved() / GB, 3)
    return report


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="small shapes on the CPU (LoRA, no NF4), to check the script")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seq", type=int, default=1024, help="tokens per training sequence (batch 1)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    a = p.parse_args()
    import_kb_llm()
    report = run(a)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()
