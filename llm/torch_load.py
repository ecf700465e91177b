"""Loading a transformers causal LM onto the right device, dtype and quantization.

Shared by the chatglm2 and hf backends. bitsandbytes 4-bit (NF4) and 8-bit run on CUDA only; on
the CPU models run in fp32 (or bf16 when asked). The GPU memory a model needs is estimated from
its config on the meta device before anything is loaded, so a model that cannot fit fails fast
with a message saying what would. It leaves out multi-GPU sharding and CPU offload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kb.errors import ModelError
from kb.llm.base import require

log = logging.getLogger("kb.llm")
GiB = 1024**3
_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
           "float32": "float32", "fp32": "float32"}


@dataclass(frozen=True)
class Placement:
    """Where and how a model runs."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # torch dtype name
    quantize: str  # "none", "4", "8"


def resolve_placement(device: str, dtype: str, quantize: str) -> Placement:
    """Pick device and dtype from settings; refuse quantization without CUDA."""
    torch = require("torch", "hf", "Running Hugging Face models")
    quantize = str(quantize)
    if quantize not in ("none", "4", "8"):
        raise ModelError(f"quantize {quantize!r} is not one of none, 4, 8")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"llm.transformers.device is {device!r} but no CUDA GPU is visible; set llm.transformers.device: cpu")
        device = device if ":" in device else f"cuda:{torch.cuda.current_device()}"
    elif quantize != "none":
        raise ModelError(
            f"{quantize}-bit quantization (bitsandbytes) needs a CUDA GPU, and llm.transformers.device resolves to "
            f"{device!r}; set llm.transformers.quantize: none to run on the CPU (fp32, or bf16 with llm.transformers.dtype)"
        )
    if dtype == "auto":
        if device == "cpu":
            dtype = "float32"  # bf16 matmuls are slow on most CPUs
        else:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in _DTYPES:
        raise ModelError(f"llm.transformers.dtype {dtype!r} is not one of auto, bfloat16, float16, float32")
    return Placement(device, _DTYPES[dtype], quantize)


def estimate_bytes(config, quantize: str, context: int, dtype_bytes: int = 2) -> int:
    """GPU bytes for the weights (quantized linears, the rest in 16 bits) plus a full KV cache."""
    torch = require("torch", "hf", "Running Hugging Face models")
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = other = 0
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            linear += module.weight.numel()
            other += own - module.weight.numel()
        else:
            other += own
    per_linear = {"none": dtype_bytes, "8": 1.0 + 0.02, "4": 0.5 + 0.02}[quantize]
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * heads * head_dim * context * dtype_bytes
    return int(linear * per_linear + other * dtype_bytes + kv)


def check_fits(config, placement: Placement, context: int, what: str) -> None:
    """Raise ModelError when the GPU's free memory is below the estimate (plus 0.5 GiB headroom)."""
    if not placement.device.startswith("cuda"):
        return
    import torch

    need = estimate_bytes(config, placement.quantize, context) + GiB // 2
    free, _total = torch.cuda.mem_get_info(torch.device(placement.device))
    if need > free:
        hint = "try llm.transformers.quantize: 4, " if placement.quantize != "4" else ""
        raise ModelError(
            f"{what} with quantize={placement.quantize} and a {context}-token context needs about "
            f"{need / GiB:.1f} GiB of GPU memory, but {placement.device} has {free / GiB:.1f} GiB free; "
            f"{hint}a smaller llm.n_ctx, or the openai backend on a bigger server"
        )


def quantization_config(placement: Placement):
    """The BitsAndBytesConfig for the placement, or None."""
    if placement.quantize == "none":
        return None
    require("bitsandbytes", "gpu", f"{placement.quantize}-bit quantization")
    import torch
    from transformers import BitsAndBytesConfig

    if placement.quantize == "8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        # Double quantization (8-bit block scales) saves 0.26 GB on ChatGLM2-6B and measured the
        # same prefill and decode speed as fp32 scales on an H100 (docs/models.md).
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, placement.dtype),
    )


def load_causal_lm(model_cls, path: Path, placement: Placement, **kwargs):
    """from_pretrained with the placement's dtype, device and quantization; SDPA attention."""
    import torch

    q = quantization_config(placement)
    extra = {"device_map": {"": placement.device}} if placement.device != "cpu" else {}
    try:
        model = model_cls.from_pretrained(
            str(path), dtype=getattr(torch, placement.dtype), quantization_config=q,
            attn_implementation="sdpa", **extra, **kwargs,
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load the model in {path}: {e}") from e
    model.kb_placement = placement
    log.info("loaded %s on %s as %s (quantize=%s)", path, placement.device, placement.dtype, placement.quantize)
    return model.eval()

