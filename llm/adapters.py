"""Fine-tuned adapters at answer time (`llm.adapter`) and merging one into a full checkpoint.

An adapter folder is what `kb finetune` writes: peft's `adapter_config.json` +
`adapter_model.safetensors`, and `kb_finetune.json` (format version, method, base model and the
shape of its config). Before peft touches the model, the shape is compared with the loaded base
model, so an adapter trained on another model fails with both names rather than a tensor error.
LoRA layers are injected into the model in place, so the backends' token loop runs unchanged. A
P-Tuning v2 prefix is put into the KV cache before the prompt (`PrefixLM`), which is what peft
does in training. It leaves out switching between several adapters at run time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kb.errors import ModelError
from kb.llm.base import require

ADAPTER_MANIFEST = "kb_finetune.json"
FORMAT_VERSION = 1
_SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def base_signature(config) -> dict:
    """The config fields an adapter depends on."""
    return {k: getattr(config, k, None) for k in _SIGNATURE_KEYS}


def read_adapter(path: str | Path) -> dict:
    """The adapter's kb_finetune.json (or {} for a plain peft folder); ModelError if it is not an adapter."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"adapter folder {folder} does not exist; set llm.adapter to the folder `kb finetune --out` wrote")
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"{folder} is not a peft adapter (no adapter_config.json); point llm.adapter at the "
                         "folder `kb finetune --out` wrote, not at a checkpoint-N parent or a model")
    manifest_path = folder / ADAPTER_MANIFEST
    if not manifest_path.is_file():
        return {}
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{manifest_path} has format version {manifest.get('format_version')!r}; this kb reads "
                         f"version {FORMAT_VERSION}; upgrade kb or fine-tune again")
    return manifest


def check_matches(manifest: dict, model, folder: Path) -> None:
    """Refuse an adapter trained on a model of another shape, naming both."""
    want = manifest.get("base")
    have = base_signature(model.config)
    if want and want != have:
        diff = ", ".join(f"{k} {want.get(k)} vs {have.get(k)}" for k in _SIGNATURE_KEYS if want.get(k) != have.get(k))
        raise ModelError(f"adapter {folder} was trained on {manifest.get('base_model')!r}, which does not match the "
                         f"loaded model ({diff}); set llm.model to that base model or train a new adapter")


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
    import torch

    from kb.llm.generation import cache_keyword

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
    from kb.llm.finetune import load_for_training

    peft = require("peft", "finetune", "Merging an adapter")
    backend = load_for_training(base, "lora", device="cpu", dtype="float32", cache_dir=cache_dir)
    check_matches(manifest, backend.model, folder)
    merged = peft.PeftModel.from_pretrained(backend.model, str(folder)).merge_and_unload()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    if backend.name == "chatglm2":
        from kb.llm.chatglm2_convert import MANIFEST, TOKENIZER_FILE

        shutil.copy2(backend.folder / TOKENIZER_FILE, out / TOKENIZER_FILE)
        convert_manifest = json.loads((backend.folder / MANIFEST).read_text(encoding="utf-8"))
        convert_manifest["merged_adapter"] = str(folder)
        (out / MANIFEST).write_text(json.dumps(convert_manifest, indent=2), encoding="utf-8")
    else:
        backend.tokenizer.save_pretrained(str(out))
    return out

