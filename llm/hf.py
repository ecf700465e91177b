"""Any Hugging Face chat model folder (AutoModelForCausalLM + the tokenizer's chat template).

Same placement and quantization as the chatglm2 backend (bf16 on CUDA, NF4 / 8-bit through
bitsandbytes, fp32 on the CPU) and the same token loop. First-generation ChatGLM-6B is detected
and refused with the way to run it (its remote code needs transformers < 4.34, see
docs/models.md). `llm.adapter` applies a fine-tuned LoRA or prefix adapter (kb.llm.adapters). What it
shares with chatglm2 is in torch_base. It leaves out multi-modal processors.
"""

from __future__ import annotations

import json
from pathlib import Path

from kb.errors import ConfigError, ModelError
from kb.llm.base import Message, require
from kb.llm.torch_base import TorchBackend, TrainingTokens, torch_options
from kb.llm.torch_describe import describe_folder
from kb.llm.torch_load import check_fits, resolve_placement

GEN1_TRANSFORMERS = ">=4.27,<4.34"  # THUDM/chatglm-6b's remote code runs on these only


def check_not_chatglm(folder: Path) -> None:
    """Refuse THUDM ChatGLM folders here (read from config.json), saying which route runs them."""
    path = Path(folder).expanduser() / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if config.get("model_type") != "chatglm":
        return
    if "multi_query_group_num" in config:
        raise ModelError(f"{folder} is a ChatGLM2 checkpoint; set llm.backend: chatglm2 to run it natively")
    transformers = require("transformers", "hf", "The hf backend")
    raise ModelError(
        f"{folder} is first-generation ChatGLM-6B, whose remote code needs transformers{GEN1_TRANSFORMERS} "
        f"(installed: {transformers.__version__}, which kb needs); serve it from a separate environment "
        "with that pin behind an OpenAI-compatible server and set llm.backend: openai (docs/models.md)"
    )


class HFBackend(TorchBackend):
    """A transformers causal LM with a chat template."""

    name = "hf"

    def __init__(self, model, tokenizer, **options) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(f"the tokenizer of {model.name_or_path} has no chat template; use a chat/instruct model")
        super().__init__(model, tokenizer, **options)
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            self.eos_ids.add(tokenizer.eos_token_id)

    @classmethod
    def from_folder(cls, folder: str | Path, *, quantize: str = "none", device: str = "auto", dtype: str = "auto",
                    n_ctx: int = 0, trust_remote_code: bool = False, adapter: str = "", **gen) -> HFBackend:
        """Load a local model folder (or a name already in the Hugging Face cache)."""
        transformers = require("transformers", "hf", "The hf backend")
        check_not_chatglm(Path(folder))
        try:
            config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ModelError(f"could not read a model config from {folder!r}: {e}") from e
        window = n_ctx or config_window(config.to_dict())
        placement = resolve_placement(device, dtype, quantize)
        check_fits(config, placement, window, str(folder))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = cls.load_model(transformers.AutoModelForCausalLM, Path(folder), placement, adapter,
                               trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, context_window=window, **gen)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The chat template applied to `messages`, ready for the assistant's turn."""
        out = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def training_tokens(self) -> TrainingTokens:
        tok = self.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else min(self.eos_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        return self.prompt_ids, lambda text: tok.encode(text, add_special_tokens=False), eos, pad

    def save_tokenizer(self, out: Path, adapter: Path) -> None:
        self.tokenizer.save_pretrained(str(out))


def from_settings(settings) -> HFBackend:
    """llm.model names the folder; quantize / device / n_ctx, llm.transformers and llm.hf apply."""
    if not settings.model:
        raise ConfigError("llm.backend is hf but llm.model is empty; set it to a model folder")
    return HFBackend.from_folder(settings.model, trust_remote_code=settings.hf.trust_remote_code,
                                 **torch_options(settings))


def describe(settings):
    """The Hugging Face folder (or cached model name) llm.model names, without loading it (kb.llm.torch_describe)."""
    return describe_folder(settings, "hf", config_window, cached_names=True)


def config_window(config: dict) -> int:
    """The window of a model folder's config.json, as HFBackend.from_folder gives it."""
    return int(config.get("max_position_embeddings") or 0) or 2048
