"""Fine-tuned adapters at answer time (`llm.adapter`) and merging one into a full checkpoint.

An adapter folder is what `kb finetune` writes: peft's `adapter_config.json` +
`adapter_model.safetensors`, and `kb_finetune.json` (format version, method, base model and the
shape of its config). Before peft touches the model, the shape is compared with the loaded base
model, so an adapter trained on another model fails with both names rather than a tensor error.
LoRA layers are injected into the model in place, so the backends' token loop runs unchanged. A
P-Tuning v2 prefix is put into the KV cache before the prompt (`PrefixLM`), which is what peft
does in training. Merging loads the base model through the backend that serves it (kb.llm.finetune's
loader), which writes its own tokenizer files beside the merged weights. The manifest's format is
kb.llm.adapter_manifest's. It leaves out switching between several adapters at run time.
"""

from __future__ import annotations

from pathlib import Path

from kb.errors import ModelError
from kb.llm.adapter_manifest import (
    ADAPTER_MANIFEST,
    FORMAT_VERSION,
    base_signature,
    check_matches,
    read_adapter,
)
from kb.llm.base import require
from kb.llm.finetune import load_for_training
from kb.llm.generation import cache_keyword

__all__ = ["ADAPTER_MANIFEST", "FORMAT_VERSION", "PrefixLM", "apply_adapter", "base_signature", "check_matches",
           "merge_adapter", "read_adapter"]


def apply_adapter(model, path: str | Path):
    """`model` with the adapter applied, ready for kb's token loop."""
    peft = require("peft", "finetune", "Applying a fine-tuned adapter (llm.adapter)")
    folder = Path(path).expanduser()
    manifest = read_adapter(folder)
    check_matches(manifest, model, folder)
    placement = getattr(model, "kb_placement", None)
    try:
        wrapped = peft.PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ModelError(f"adapter {folder} does not fit the model {model.name_or_path}: {e}") from e
    wrapped.eval()
    if wrapped.peft_config["default"].is_prompt_learning:
        out = PrefixLM(wrapped)
    else:
        out = wrapped.get_base_model()  # LoRA layers now live inside the base model
    out.kb_placement = placement
    out.kb_adapter = str(folder)
    return out


def _prefix_lm_class():
    import torch  # optional (the hf extra), and slow to import: only when a prefix adapter is served

    class PrefixLM(torch.nn.Module):
        """A causal LM whose KV cache starts with a trained P-Tuning v2 prefix.

        Positions continue after the prefix, as in peft's training forward. Only for kb's token
        loop (no attention_mask, batch of one); `model.generate` is not supported through it.
        """

        def __init__(self, peft_model) -> None:
            super().__init__()
            self.peft_model = peft_model
            self.base = peft_model.get_base_model()
            self.config = self.base.config
            self.generation_config = self.base.generation_config
            self.name_or_path = self.base.name_or_path
            self._kw = cache_keyword(self.base)

        @property
        def device(self):
            return self.base.device

        def forward(self, input_ids, cache=None, past_key_values=None, **kwargs):
            cache = cache if cache is not None else past_key_values
            if cache is None or cache.get_seq_length() == 0:
                prefix = self.peft_model.get_prompt(batch_size=input_ids.shape[0])
                if cache is None:
                    cache = prefix
                else:
                    for i in range(len(prefix.layers)):
                        cache.update(prefix.layers[i].keys, prefix.layers[i].values, i)
            return self.base(input_ids=input_ids, **{self._kw: cache}, **kwargs)

    return PrefixLM


def PrefixLM(peft_model):  # noqa: N802 - a class built on first use, so importing this module needs no torch
    """Wrap a prefix-tuned PeftModel for kb's token loop."""
    return _prefix_lm_class()(peft_model)


def merge_adapter(adapter: str | Path, out: str | Path, *, model: str | None = None,
                  cache_dir: str | None = None) -> Path:
    """Fold a LoRA adapter into its base model and save a full checkpoint kb (or transformers) loads."""
    folder = Path(adapter).expanduser()
    manifest = read_adapter(folder)
    base = model or manifest.get("base_model")
    if not base:
        raise ModelError(f"{folder} does not name its base model; pass --model")
    if manifest.get("method") == "prefix":
        raise ModelError("a P-Tuning v2 prefix has no weights to fold into the model; serve it with llm.adapter")
    peft = require("peft", "finetune", "Merging an adapter")
    backend = load_for_training(base, "lora", device="cpu", dtype="float32", cache_dir=cache_dir)
    check_matches(manifest, backend.model, folder)
    merged = peft.PeftModel.from_pretrained(backend.model, str(folder)).merge_and_unload()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    backend.save_tokenizer(out, folder)  # what loads the tokenizer again, in the backend's own form
    return out

