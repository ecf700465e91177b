"""Fine-tune ChatGLM2 (or any Hugging Face causal LM) on your own Q&A with peft.

Methods: `lora` (LoRA on every attention and MLP linear: q/k/v/o and gate|up/down, never the
output layer), `qlora` (the same over the base model loaded in NF4 through bitsandbytes; CUDA
only) and `prefix` (P-Tuning v2: trained key/value prefixes in every layer, peft's prefix tuning;
THUDM's default prefix length is 128). The model is loaded through the kb backend that serves it,
so training prompts are the backend's own prompt (`finetune_data`). The loop is kb's own: AdamW,
linear warmup/decay, gradient accumulation, gradient checkpointing, bf16 autocast on GPUs that have
it, checkpoints every N steps that `resume` continues exactly (adapter, optimizer, schedule, RNG).
Output: a peft adapter folder plus `kb_finetune.json` (format version, method, base model), written
with the checkpoints by `kb.llm.finetune_checkpoint`. Serving and merging live in `kb.llm.adapters`.
It leaves out multi-GPU and DeepSpeed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kb.config import LLMSettings
from kb.errors import ConfigError, ModelError
from kb.llm.base import load_backend, require
from kb.llm.finetune_checkpoint import manifest_for, resume_from, save_adapter, save_checkpoint
from kb.llm.finetune_data import collate, encode, load_records
from kb.llm.generation import cache_keyword

METHODS = ("lora", "qlora", "prefix")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved in the adapter's manifest."""

    method: str = "lora"
    steps: int = 100
    batch_size: int = 1
    grad_accum: int = 16
    lr: float | None = None  # None: 2e-2 for prefix (THUDM's P-Tuning v2), 2e-4 for LoRA
    warmup_steps: int = 0
    max_source: int = 512
    max_target: int = 512
    save_every: int = 0  # 0: only the final adapter
    seed: int = 42
    gradient_checkpointing: bool | None = None  # None: on for lora/qlora, off for prefix (see wrap)
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    prefix_len: int = 128
    prefix_projection: bool = False
    prompt_key: str = "content"
    response_key: str = "summary"
    history_key: str | None = None

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-2 if self.method == "prefix" else 2e-4)


@dataclass
class TrainResult:
    """What a run did: final adapter folder, per-step mean losses, eval loss."""

    out: Path
    losses: list[float] = field(default_factory=list)
    eval_loss: float | None = None
    resumed_from: int = 0


def load_for_training(model: str, method: str, *, device: str = "auto", dtype: str = "auto",
                      cache_dir: str | None = None):
    """The kb backend holding the base model (through the backend that serves it: chatglm2 or hf for a model
    folder), loaded as `method` needs; ConfigError when that backend cannot train `method`."""
    if method not in METHODS:
        raise ConfigError(f"fine-tuning method {method!r} is not one of {', '.join(METHODS)}")
    torch = require("torch", "finetune", "Fine-tuning")
    cuda = torch.cuda.is_available() and device != "cpu"
    if method == "qlora" and not cuda:
        raise ModelError(
            "--method qlora trains LoRA over the base model quantized to NF4 by bitsandbytes, which needs a "
            "CUDA GPU, and none is in use here; use --method lora (or prefix) on the CPU")
    if dtype == "auto":  # bf16 where the GPU has it; fp32 otherwise (fp16 training needs loss scaling)
        dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    settings = LLMSettings(model=model, quantize="4" if method == "qlora" else "none", device=device,
                           temperature=0, transformers={"dtype": dtype}, chatglm2={"cache_dir": cache_dir or ""})
    backend = load_backend(settings)
    if method not in backend.finetune_methods:
        raise ConfigError(f"--model {model!r} runs on the {backend.name} backend, which cannot train {method} "
                          "adapters; fine-tune a ChatGLM2 or Hugging Face model folder")
    return backend


def peft_config(cfg: TrainConfig):
    """LoraConfig on all attention/MLP linears, or PrefixTuningConfig for P-Tuning v2."""
    peft = require("peft", "finetune", "Fine-tuning")
    if cfg.method == "prefix":
        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prefix_len,
                                       prefix_projection=cfg.prefix_projection)
    # "all-linear": every nn.Linear (or bnb 4-bit linear) except the output layer.
    return peft.LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                           lora_dropout=cfg.lora_dropout, target_modules="all-linear")


def wrap(model, cfg: TrainConfig):
    """The base model with a fresh trainable adapter (base weights frozen)."""
    peft = require("peft", "finetune", "Fine-tuning")
    use_gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cfg.method != "prefix"
    if use_gc and cfg.method == "prefix":
        # Checkpointed decoder layers drop the past key/values, which is where the prefix lives, and
        # peft refuses the combination; a prefix run stores activations (shorter --max-source helps).
        raise ConfigError("prefix tuning (P-Tuning v2) cannot use gradient checkpointing: the prefix is the KV "
                          "cache, which checkpointed layers drop; leave --gradient-checkpointing off for prefix")
    if cfg.method == "qlora":  # freezes the base, casts norms/embeddings to fp32 for stable training
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    gc = {"use_reentrant": False}  # non-reentrant: no need for the inputs to require grad
    if use_gc and hasattr(model, "activation_checkpointing_enable"):  # the name from transformers 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc)
    elif use_gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc)
    model.config.use_cache = False
    return peft.get_peft_model(model, peft_config(cfg))


def micro_batches(n: int, cfg: TrainConfig, start: int):
    """Indices of each micro-batch from number `start` on: a seeded shuffle per epoch, so a resumed run
    sees exactly the batches the uninterrupted one would have."""
    per_epoch = max(1, n // cfg.batch_size)
    m = start
    while True:
        epoch, pos = divmod(m, per_epoch)
        order = list(range(n))
        random.Random(cfg.seed + epoch).shuffle(order)
        yield order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        m += 1


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:  # linear warmup, then linear decay to 0 at cfg.steps
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))
    return factor


def train(model: str, data: str | Path, out: str | Path, cfg: TrainConfig = TrainConfig(), *,
          eval_data: str | Path | None = None, resume: str | Path | None = None, device: str = "auto",
          dtype: str = "auto", cache_dir: str | None = None,
          on_step: Callable[[int, int, float, float], None] | None = None) -> TrainResult:
    """Train an adapter on `data`, save it in `out`; on_step(step, total, loss, lr) after each step."""
    torch = require("torch", "finetune", "Fine-tuning")
    out = Path(out).expanduser()
    records = load_records(data, prompt_key=cfg.prompt_key, response_key=cfg.response_key,
                           history_key=cfg.history_key)
    evals = load_records(eval_data, prompt_key=cfg.prompt_key, response_key=cfg.response_key,
                         history_key=cfg.history_key) if eval_data else []
    backend = load_for_training(model, cfg.method, device=device, dtype=dtype, cache_dir=cache_dir)
    prompt_ids, answer_ids, eos, pad = backend.training_tokens()
    examples = [encode(r, prompt_ids, answer_ids, eos, max_source=cfg.max_source, max_target=cfg.max_target)
                for r in records]
    torch.manual_seed(cfg.seed)
    net = wrap(backend.model, cfg)
    optimizer, scheduler = optimizer_for(net, cfg)
    manifest = manifest_for(model, backend, cfg)
    result = TrainResult(out)
    if resume:
        result.resumed_from, result.losses = resume_from(resume, net, optimizer, scheduler, manifest)
    start = result.resumed_from
    batches = micro_batches(len(examples), cfg, start * cfg.grad_accum)
    net.train()
    for step in range(start, cfg.steps):
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        result.losses.append(train_step(net, examples, pad, batches, cfg, optimizer, scheduler))
        if on_step:
            on_step(step + 1, cfg.steps, result.losses[-1], lr)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(net, optimizer, scheduler, out / f"checkpoint-{step + 1}", manifest, result.losses,
                            step + 1)
    if evals:
        result.eval_loss = eval_loss(net, [encode(r, prompt_ids, answer_ids, eos, max_source=cfg.max_source,
                                                  max_target=cfg.max_target) for r in evals], pad)
    save_adapter(net, out, {**manifest, "steps": cfg.steps, "losses": result.losses, "eval_loss": result.eval_loss})
    return result


def optimizer_for(net, cfg: TrainConfig):
    """AdamW over the trainable (adapter) parameters and the warmup/decay schedule."""
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate(), weight_decay=0.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))


def train_step(net, examples, pad: int, batches, cfg: TrainConfig, optimizer, scheduler) -> float:
    """One optimizer step over cfg.grad_accum micro-batches from `batches`; the mean loss."""
    total = 0.0
    for _ in range(cfg.grad_accum):
        batch = {k: v.to(net.device) for k, v in collate([examples[i] for i in next(batches)], pad).items()}
        with _autocast(net):
            loss = forward(net, batch).loss / cfg.grad_accum
        loss.backward()
        total += loss.item()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def forward(net, batch: dict):
    """The model's output (with loss) on a collated batch.

    For a prefix, the trained keys/values go into the cache under the keyword the model takes:
    peft's own forward passes `past_key_values`, which transformers 5.2x renamed `cache` and which
    5.40 removes (the prefix would then be dropped without an error). Same mask and positions as
    peft: ones for the prefix, positions continuing after it.
    """
    config = net.peft_config[net.active_adapter]
    if not config.is_prompt_learning:
        return net(**batch)
    torch = require("torch", "finetune", "Fine-tuning")
    base = net.get_base_model()
    n = batch["input_ids"].shape[0]
    mask = batch["attention_mask"]
    mask = torch.cat([torch.ones(n, config.num_virtual_tokens, dtype=mask.dtype, device=mask.device), mask], dim=1)
    return base(input_ids=batch["input_ids"], attention_mask=mask, labels=batch["labels"],
                **{cache_keyword(base): net.get_prompt(batch_size=n)})


def _autocast(net):
    torch = require("torch", "finetune", "Fine-tuning")
    if net.device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_loss(net, examples, pad: int) -> float:
    """Mean answer-token loss over `examples`, one at a time."""
    import torch

    net.eval()
    with torch.no_grad(), _autocast(net):
        losses = [float(forward(net, {k: v.to(net.device) for k, v in collate([e], pad).items()}).loss)
                  for e in examples]
    net.train()
    return sum(losses) / len(losses)
