"""The `llm` section of kb's settings: which chat model answers, and how it is run.

At the top of `llm` are the settings every backend uses (or the CLI overrides); those that serve only some
backends sit in a group named after them: `llm.gguf`, `llm.transformers` (chatglm2 and hf), `llm.chatglm2`,
`llm.hf` and `llm.openai`. The flat names of earlier versions (`llm.base_url`, `KB_LLM__BASE_URL`,
`LLMSettings(base_url=...)`) are still read, moved into their group with one line on stderr per name and
process, and still readable as attributes. It leaves out which backend the settings resolve to (kb.llm.base).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from kb.config.renamed import move_renamed, renamed_within, tell_renamed
from kb.llm.base import Sampling  # the sampling defaults, defined once there


class GGUFSettings(BaseModel):
    """Settings only the gguf backend (llama.cpp) reads."""

    repeat_penalty: float = Field(
        1.0, ge=1, le=2, description="How much less likely a token of the last 64 becomes; 1 = none. On the "
        "embedded SmolLM2, 1.1 cut loops from 0.94 to 0.24 of its dev-set answers, less well than "
        "llm.gguf.no_repeat_ngram (tests/bench/bench_sampling.py)."
    )
    no_repeat_ngram: int | None = Field(
        None, ge=0, description="Forbid the token that would repeat an n-gram of the answer (0: off). Unset: 4 "
        "for a small model (under 1B parameters, e.g. the embedded SmolLM2: loops 0.94 -> 0.06 of its dev-set "
        "answers, answer keywords 0.21 -> 0.38), off for others. kb's loop guard stops what gets through, for "
        "every backend."
    )


class TransformersSettings(BaseModel):
    """Settings of the backends that run a model with transformers and torch: chatglm2 and hf."""

    device: str = Field("auto", description="Where the model runs: auto, cpu, cuda, cuda:N.")
    quantize: Literal["none", "4", "8"] = Field(
        "none", description="bitsandbytes quantization on CUDA: 4 (NF4) or 8 bits."
    )

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight dtype: auto is bf16 (fp16 on old GPUs) on CUDA and fp32 on the CPU."
    )
    prefill_chunk: int = Field(
        1024, ge=0, description="Feed long prompts through the KV cache this many tokens at a time, which bounds "
        "activation memory (0: the whole prompt at once)."
    )


class ChatGLM2Settings(BaseModel):
    """Settings only the chatglm2 backend reads."""

    cache_dir: str = Field(
        "", description="Where the converted checkpoint is kept; empty means next to the THUDM folder "
        "(<folder>-kb-glm) when writable, else <home>/models/ ($KB_HOME/models)."
    )


class HFSettings(BaseModel):
    """Settings only the hf backend reads."""

    trust_remote_code: bool = Field(
        False, description="Run the model folder's own Python code (only enable for folders you trust)."
    )


class OpenAISettings(BaseModel):
    """Settings only the openai backend (an OpenAI-compatible server) reads."""

    base_url: str = Field("", description="The server's URL, e.g. http://localhost:8000/v1.")
    api_key: str = Field("", description="API key for the server (empty: none; vLLM and Ollama need none).")


FLAT_NAMES = renamed_within("llm")  # flat names of earlier versions -> their place in a group (kb.config.renamed)


def _moved(old: str) -> property:
    """A read-only attribute under the old flat name that reads the grouped setting."""
    group, name = FLAT_NAMES[old].split(".")
    return property(lambda self: getattr(getattr(self, group), name), doc=f"llm.{group}.{name} (the old name).")


class LLMSettings(BaseModel):
    backend: str = Field(
        "auto", description="Which model backend answers: auto (chosen from llm.model / llm.openai.base_url: "
        "empty or *.gguf -> gguf, a THUDM ChatGLM folder -> chatglm2, another model folder -> hf, "
        "base_url set -> openai), gguf (llama.cpp, the embedded SmolLM2 default), chatglm2, hf, openai "
        "(vLLM, Ollama, Xinference), scripted (tests), or a name given to kb.llm.register_backend."
    )
    model: str = Field(
        "", description="Model path or name: a GGUF file, a ChatGLM2 / Hugging Face folder, or the "
        "server's model name. Empty means the embedded SmolLM2 GGUF."
    )
    n_ctx: int = Field(0, ge=0, description="Context window in tokens; 0 means the model's own.")
    max_new_tokens: int = Field(
        Sampling.max_new_tokens, ge=1, description="Longest reply, in tokens, when the caller sets no length: `kb model chat` and "
        "kb.llm backends used directly (also through the LangChain adapter). Answers to questions use "
        "answer.answer_tokens instead (the HTTP API's max_tokens can only shorten those); query rewrites and "
        "translations have their own short limits."
    )
    temperature: float = Field(Sampling.temperature, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(Sampling.top_p, gt=0, le=1, description="Nucleus sampling mass.")
    adapter: str = Field("", description="Path of a fine-tuned adapter (LoRA / prefix) to apply.")
    gguf: GGUFSettings = Field(default_factory=GGUFSettings, description="Only for the gguf backend (llama.cpp).")
    transformers: TransformersSettings = Field(
        default_factory=TransformersSettings, description="Only for chatglm2 and hf (transformers on torch)."
    )
    chatglm2: ChatGLM2Settings = Field(default_factory=ChatGLM2Settings, description="Only for chatglm2.")
    hf: HFSettings = Field(default_factory=HFSettings, description="Only for hf.")
    openai: OpenAISettings = Field(
        default_factory=OpenAISettings, description="Only for openai (an OpenAI-compatible server)."
    )

    @model_validator(mode="before")
    @classmethod
    def _move_flat_names(cls, data: Any) -> Any:
        """Put the flat names of earlier versions into their groups (kb.config.renamed.move_renamed)."""
        return move_renamed(data, "llm")

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> LLMSettings:
        """As pydantic's, with the flat names of earlier versions in `update` moved into their groups."""
        if update and FLAT_NAMES.keys() & update.keys():
            update = dict(update)
            for old in FLAT_NAMES.keys() & update.keys():
                group, name = FLAT_NAMES[old].split(".")
                update[group] = getattr(self, group).model_copy(update={name: update.pop(old)})
                tell_renamed(f"llm.{old}", f"llm.{group}.{name}")
        return super().model_copy(update=update, deep=deep)

    # The flat names, read-only, for code written against earlier versions (settings.llm.base_url).
    repeat_penalty = _moved("repeat_penalty")
    no_repeat_ngram = _moved("no_repeat_ngram")
    device = _moved("device")
    quantize = _moved("quantize")
    dtype = _moved("dtype")
    prefill_chunk = _moved("prefill_chunk")
    cache_dir = _moved("cache_dir")
    trust_remote_code = _moved("trust_remote_code")
    base_url = _moved("base_url")
    api_key = _moved("api_key")
