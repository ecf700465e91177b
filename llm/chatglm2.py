"""The ChatGLM2-6B / -6B-32K backend on transformers' native `GlmForCausalLM`.

Point `llm.model` at the THUDM folder (config.json, weight shards, tokenizer.model). On first load
it is converted (chatglm2_convert) into a cache folder, then loaded in bf16/fp16 on CUDA, NF4 or
8-bit through bitsandbytes, or fp32 on the CPU. Prompts use ChatGLM2's `[Round i]` format and our
sentencepiece tokenizer; generation streams through the shared token loop with chunked prefill.
`llm.adapter` applies a fine-tuned LoRA or P-Tuning v2 adapter (kb.llm.adapters). It leaves out
multi-GPU placement.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kb.errors import ConfigError, ModelError
from kb.llm.base import ChatBackend, Message, check_messages, require
from kb.llm.chatglm2_convert import MANIFEST, TOKENIZER_FILE, default_cache_dir, ensure_converted
from kb.llm.chatglm2_tokenizer import ChatGLM2Tokenizer, build_prompt
from kb.llm.generation import generate_ids, stream_text
from kb.llm.torch_load import Placement, check_fits, load_causal_lm, resolve_placement

DIALOGUE_WINDOW = 8192  # ChatGLM2-6B was trained on 8K-token dialogues; -32K says so via rope_ratio


class ChatGLM2Backend(ChatBackend):
    """ChatGLM2 with THUDM's weights, running on GlmForCausalLM."""

    name = "chatglm2"

    def __init__(self, model, tokenizer: ChatGLM2Tokenizer, *, context_window: int,
                 prefill_chunk: int = 1024, max_new_tokens: int = 512,
                 temperature: float = 0.1, top_p: float = 0.8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.prefill_chunk = prefill_chunk
        self.defaults = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ModelError(
                f"tokenizer.model has {tokenizer.vocab_size} tokens with specials but the model only "
                f"{model.config.vocab_size}; the tokenizer does not belong to this checkpoint"
            )

    @classmethod
    def from_folder(cls, folder: str | Path, *, quantize: str = "none", device: str = "auto",
                    dtype: str = "auto", cache_dir: str | Path | None = None, n_ctx: int = 0,
                    adapter: str = "", **gen) -> ChatGLM2Backend:
        """Convert (if needed) and load a THUDM ChatGLM2 folder or an already-converted one."""
        transformers = require("transformers", "hf", "The chatglm2 backend")
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ModelError(f"ChatGLM2 folder {folder} does not exist; set llm.model to the downloaded folder")
        converted = folder if (folder / MANIFEST).is_file() else ensure_converted(
            folder, Path(cache_dir).expanduser() if cache_dir else default_cache_dir(folder, Path("~/.kb")))
        config = transformers.GlmConfig.from_pretrained(str(converted))
        window = n_ctx or _native_window(config)
        placement = resolve_placement(device, dtype, quantize)
        check_fits(config, placement, window, f"ChatGLM2 ({folder.name})")
        model = load_causal_lm(transformers.GlmForCausalLM, converted, placement)
        if adapter:
            from kb.llm.adapters import apply_adapter

            model = apply_adapter(model, adapter)
        backend = cls(model, ChatGLM2Tokenizer(converted / TOKENIZER_FILE), context_window=window, **gen)
        backend.folder = converted  # the GlmForCausalLM folder (merging an adapter copies its tokenizer)
        return backend

    @property
    def placement(self) -> Placement | None:
        """Device, dtype and quantization of the loaded model."""
        return getattr(self.model, "kb_placement", None)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The model input for a chat: [gMASK] sop + the `[Round i]` prompt."""
        return self.tokenizer.encode_prompt(build_prompt(messages))

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        check_messages(messages)
        ids = self.prompt_ids(messages)
        budget = self.context_window - len(ids)
        if budget <= 0:
            raise ModelError(
                f"the prompt takes {len(ids)} tokens but the context window is {self.context_window}; "
                "ask with fewer or shorter passages (retrieval.k) or raise llm.n_ctx"
            )
        new = min(max_new_tokens or self.defaults["max_new_tokens"], budget)
        tokens = generate_ids(
            self.model, ids, max_new_tokens=new,
            temperature=self.defaults["temperature"] if temperature is None else temperature,
            top_p=self.defaults["top_p"] if top_p is None else top_p,
            eos_ids={self.tokenizer.eos_id}, prefill_chunk=self.prefill_chunk,
        )
        yield from stream_text(tokens, self.tokenizer.decode, stop)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def count_message_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))


def _native_window(config) -> int:
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
    return ChatGLM2Backend.from_folder(
        settings.model, quantize=settings.quantize, device=settings.device, dtype=settings.dtype,
        cache_dir=settings.cache_dir or None, n_ctx=settings.n_ctx, prefill_chunk=settings.prefill_chunk,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
        adapter=settings.adapter,
    )
