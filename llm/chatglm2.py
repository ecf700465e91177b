"""The ChatGLM2-6B / -6B-32K backend on transformers' native `GlmForCausalLM`.

Point `llm.model` at the THUDM folder (config.json, weight shards, tokenizer.model). On first load
it is converted (chatglm2_convert) into a cache folder, then loaded in bf16/fp16 on CUDA, NF4 or
8-bit through bitsandbytes, or fp32 on the CPU. Prompts use ChatGLM2's `[Round i]` format and our
sentencepiece tokenizer; generation streams through the shared token loop with chunked prefill.
`llm.adapter` applies a fine-tuned LoRA or P-Tuning v2 adapter (kb.llm.adapters). The converted copy
goes to `llm.chatglm2.cache_dir`, else next to the THUDM folder, else $KB_HOME/models. What it shares
with the hf backend is in torch_base. It leaves out multi-GPU placement.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from kb.config import default_models_dir
from kb.errors import ConfigError, ModelError
from kb.llm.base import Message, require
from kb.llm.chatglm2_convert import (
    MANIFEST,
    TOKENIZER_FILE,
    default_cache_dir,
    ensure_converted,
    glm_config_dict,
)
from kb.llm.chatglm2_tokenizer import ChatGLM2Tokenizer, build_prompt
from kb.llm.torch_base import TorchBackend, TrainingTokens, torch_options
from kb.llm.torch_describe import describe_folder
from kb.llm.torch_load import check_fits, resolve_placement

DIALOGUE_WINDOW = 8192  # ChatGLM2-6B was trained on 8K-token dialogues; -32K says so via rope_ratio


class ChatGLM2Backend(TorchBackend):
    """ChatGLM2 with THUDM's weights, running on GlmForCausalLM."""

    name = "chatglm2"

    def __init__(self, model, tokenizer: ChatGLM2Tokenizer, **options) -> None:
        super().__init__(model, tokenizer, **options)
        self.eos_ids = {tokenizer.eos_id}
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ModelError(
                f"tokenizer.model has {tokenizer.vocab_size} tokens with specials but the model only "
                f"{model.config.vocab_size}; the tokenizer does not belong to this checkpoint"
            )

    @classmethod
    def from_folder(cls, folder: str | Path, *, quantize: str = "none", device: str = "auto",
                    dtype: str = "auto", cache_dir: str | Path | None = None, n_ctx: int = 0,
                    adapter: str = "", **gen) -> ChatGLM2Backend:
        """Convert (if needed) and load a THUDM ChatGLM2 folder or an already-converted one; without
        `cache_dir` the conversion goes next to the folder when writable, else under $KB_HOME/models."""
        transformers = require("transformers", "hf", "The chatglm2 backend")
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ModelError(f"ChatGLM2 folder {folder} does not exist; set llm.model to the downloaded folder")
        converted = folder if (folder / MANIFEST).is_file() else ensure_converted(
            folder, Path(cache_dir).expanduser() if cache_dir else default_cache_dir(folder, default_models_dir()))
        config = transformers.GlmConfig.from_pretrained(str(converted))
        window = n_ctx or native_window(config)
        placement = resolve_placement(device, dtype, quantize)
        check_fits(config, placement, window, f"ChatGLM2 ({folder.name})")
        model = cls.load_model(transformers.GlmForCausalLM, converted, placement, adapter)
        backend = cls(model, ChatGLM2Tokenizer(converted / TOKENIZER_FILE), context_window=window, **gen)
        backend.folder = converted  # the GlmForCausalLM folder (merging an adapter copies its tokenizer)
        return backend

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The model input for a chat: [gMASK] sop + the `[Round i]` prompt."""
        return self.tokenizer.encode_prompt(build_prompt(messages))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def training_tokens(self) -> TrainingTokens:
        return self.prompt_ids, self.tokenizer.encode, self.tokenizer.eos_id, self.tokenizer.pad_id

    def save_tokenizer(self, out: Path, adapter: Path) -> None:
        """tokenizer.model and the conversion manifest (naming the merged adapter): what from_folder loads."""
        shutil.copy2(self.folder / TOKENIZER_FILE, out / TOKENIZER_FILE)
        manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        manifest["merged_adapter"] = str(adapter)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def native_window(config) -> int:
    """ChatGLM2's window: 8K dialogues, or the whole positions for a linear-rope (-32K) model."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type") == "linear":
        return config.max_position_embeddings
    return min(config.max_position_embeddings, DIALOGUE_WINDOW)


def from_settings(settings) -> ChatGLM2Backend:
    """Build the backend from LLMSettings (llm.model names the folder)."""
    if not settings.model:
        raise ConfigError(
            "llm.backend is chatglm2 but llm.model is empty; set it to the THUDM chatglm2-6b(-32k) folder"
        )
    return ChatGLM2Backend.from_folder(settings.model, cache_dir=settings.chatglm2.cache_dir or None,
                                       **torch_options(settings))


def describe(settings):
    """The ChatGLM2 folder llm.model names, without loading it (kb.llm.torch_describe)."""
    return describe_folder(settings, "chatglm2", config_window)


def config_window(config: dict) -> int:
    """The window of a ChatGLM2 folder's config.json (THUDM's or the converted GLM one), as loading it gives."""
    glm = glm_config_dict(config) if "multi_query_group_num" in config else config
    return native_window(SimpleNamespace(rope_parameters=glm.get("rope_parameters"),
                                         max_position_embeddings=glm.get("max_position_embeddings", 0)))
