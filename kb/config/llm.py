"""The `llm` section of kb's settings: which chat model answers, and how it is run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LLMSettings(BaseModel):
    backend: str = Field(
        "auto", description="Which model backend answers: auto (chosen from llm.model / llm.base_url: "
        "empty or *.gguf -> gguf, a THUDM ChatGLM folder -> chatglm2, another model folder -> hf, "
        "base_url set -> openai), gguf (llama.cpp, the embedded SmolLM2 default), chatglm2, hf, openai "
        "(vLLM, Ollama, Xinference), scripted (tests), or a name given to kb.llm.register_backend."
    )
    model: str = Field(
        "", description="Model path or name: a GGUF file, a ChatGLM2 / Hugging Face folder, or the "
        "server's model name. Empty means the embedded SmolLM2 GGUF."
    )
    quantize: Literal["none", "4", "8"] = Field(
        "none", description="bitsandbytes quantization on CUDA: 4 (NF4) or 8 bits (chatglm2 and hf)."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight dtype for chatglm2/hf: auto is bf16 (fp16 on old GPUs) on CUDA and "
        "fp32 on the CPU."
    )
    n_ctx: int = Field(0, ge=0, description="Context window in tokens; 0 means the model's own.")
    max_new_tokens: int = Field(512, ge=1, description="Longest answer, in tokens.")
    temperature: float = Field(0.1, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(0.8, gt=0, le=1, description="Nucleus sampling mass.")
    repeat_penalty: float = Field(
        1.0, ge=1, le=2, description="gguf (llama.cpp): how much less likely a token of the last 64 becomes; 1 = "
        "none. On the embedded SmolLM2, 1.1 cut loops from 0.94 to 0.24 of its dev-set answers, less well than "
        "llm.no_repeat_ngram (tests/bench/bench_sampling.py)."
    )
    no_repeat_ngram: int | None = Field(
        None, ge=0, description="gguf (llama.cpp): forbid the token that would repeat an n-gram of the answer "
        "(0: off). Unset: 4 for a small model (under 1B parameters, e.g. the embedded SmolLM2: loops 0.94 -> "
        "0.06 of its dev-set answers, answer keywords 0.21 -> 0.38), off for others. kb's loop guard stops "
        "what gets through, for every backend."
    )
    prefill_chunk: int = Field(
        1024, ge=0, description="chatglm2/hf: feed long prompts through the KV cache this many tokens at "
        "a time, which bounds activation memory (0: the whole prompt at once)."
    )
    cache_dir: str = Field(
        "", description="chatglm2: where the converted checkpoint is kept; empty means next to the THUDM "
        "folder (<folder>-kb-glm) when writable, else ~/.kb/models/."
    )
    trust_remote_code: bool = Field(
        False, description="hf: run the model folder's own Python code (needed by first-generation "
        "ChatGLM-6B; only enable for folders you trust)."
    )
    base_url: str = Field("", description="OpenAI-compatible server URL, e.g. http://localhost:8000/v1.")
    api_key: str = Field("", description="API key for the OpenAI-compatible server.")
    adapter: str = Field("", description="Path of a fine-tuned adapter (LoRA / prefix) to apply.")
