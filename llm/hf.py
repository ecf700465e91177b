"""Any Hugging Face chat model folder (AutoModelForCausalLM + the tokenizer's chat template).

Same placement and quantization as the chatglm2 backend (bf16 on CUDA, NF4 / 8-bit through
bitsandbytes, fp32 on the CPU) and the same token loop. First-generation ChatGLM-6B is detected
and refused with the way to run it (its remote code needs transformers < 4.34, see
docs/models.md). `llm.adapter` applies a fine-tuned LoRA or prefix adapter (kb.llm.adapters). It
leaves out multi-modal processors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from kb.errors import ConfigError, ModelError
from kb.llm.base import ChatBackend, Message, check_messages, require
from kb.llm.generation import generate_ids, stream_text
from kb.llm.torch_load import check_fits, load_causal_lm, resolve_placement

GEN1_TRANSFORMERS = ">=4.27,<4.34"  # THUDM/chatglm-6b's remote code runs on these only


def check_not_chatglm(folder: Path) -> None:
    """Refuse THUDM ChatGLM folders here (read from config.json), saying which route runs them."""
    path = Path(folder).expanduser() / "config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if config.get("model_type") != "chatglm":
        return
    if "multi_query_group_num" in config:
        raise ModelError(f"{folder} is a ChatGLM2 checkpoint; set llm.backend: chatglm2 to run it natively")
    import transformers

    raise ModelError(
        f"{folder} is first-generation ChatGLM-6B, whose remote code needs transformers{GEN1_TRANSFORMERS} "
        f"(installed: {transformers.__version__}, which kb needs); serve it from a separate environment "
        "with that pin behind an OpenAI-compatible server and set llm.backend: openai (docs/models.md)"
    )


class HFBackend(ChatBackend):
    """A transformers causal LM with a chat template."""

    name = "hf"

    def __init__(self, model, tokenizer, *, context_window: int, prefill_chunk: int = 1024,
                 max_new_tokens: int = 512, temperature: float = 0.1, top_p: float = 0.8) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(f"the tokenizer of {model.name_or_path} has no chat template; use a chat/instruct model")
        self.model, self.tokenizer = model, tokenizer
        self.context_window = context_window
        self.prefill_chunk = prefill_chunk
        self.defaults = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
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
        window = n_ctx or getattr(config, "max_position_embeddings", 0) or 2048
        placement = resolve_placement(device, dtype, quantize)
        check_fits(config, placement, window, str(folder))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = load_causal_lm(transformers.AutoModelForCausalLM, Path(folder), placement,
                               trust_remote_code=trust_remote_code)
        if adapter:
            from kb.llm.adapters import apply_adapter

            model = apply_adapter(model, adapter)
        return cls(model, tokenizer, context_window=window, **gen)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The chat template applied to `messages`, ready for the assistant's turn."""
        out = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        check_messages(messages)
        ids = self.prompt_ids(messages)
        budget = self.context_window - len(ids)
        if budget <= 0:
            raise ModelError(f"the prompt takes {len(ids)} tokens but the context window is {self.context_window}; "
                             "shorten it or raise llm.n_ctx")
        tokens = generate_ids(
            self.model, ids, max_new_tokens=min(max_new_tokens or self.defaults["max_new_tokens"], budget),
            temperature=self.defaults["temperature"] if temperature is None else temperature,
            top_p=self.defaults["top_p"] if top_p is None else top_p,
            eos_ids=self.eos_ids, prefill_chunk=self.prefill_chunk,
        )
        yield from stream_text(tokens, lambda t: self.tokenizer.decode(t, skip_special_tokens=True), stop)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count_message_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))


def from_settings(settings) -> HFBackend:
    """llm.model names the folder; quantize / device / dtype / n_ctx / trust_remote_code apply."""
    if not settings.model:
        raise ConfigError("llm.backend is hf but llm.model is empty; set it to a model folder")
    return HFBackend.from_folder(
        settings.model, quantize=settings.quantize, device=settings.device, dtype=settings.dtype,
        n_ctx=settings.n_ctx, trust_remote_code=settings.trust_remote_code, prefill_chunk=settings.prefill_chunk,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
        adapter=settings.adapter,
    )
