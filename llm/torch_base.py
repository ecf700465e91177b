"""What the two transformers backends (chatglm2, hf) share: a causal LM on torch, run by kb's token loop.

`TorchBackend` holds the loaded model and its tokenizer, loads them onto the placement (torch_load) with a
fine-tuned adapter applied (adapters), checks that the prompt leaves room in the context window, streams
through the shared token loop (generation) with chunked prefill, counts tokens by the rendered prompt, and
gives fine-tuning its token functions. A subclass says how a chat becomes input ids, how ids become text,
which ids end an answer, and how its tokenizer is saved beside a merged checkpoint. It leaves out the
model formats (chatglm2.py, hf.py) and placement itself (torch_load.py).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

from kb.errors import ModelError
from kb.llm.adapters import apply_adapter
from kb.llm.base import ChatBackend, Message, Sampling
from kb.llm.generation import generate_ids, stream_text
from kb.llm.torch_load import Placement, load_causal_lm

# (prompt ids of a chat, ids of an answer's text, eos id, pad id): what kb.llm.finetune encodes examples with.
TrainingTokens = tuple[Callable[[list[Message]], list[int]], Callable[[str], list[int]], int, int]


class TorchBackend(ChatBackend):
    """A transformers causal LM with its tokenizer, generating through kb's token loop."""

    finetune_methods = ("lora", "qlora", "prefix")
    eos_ids: set[int] | frozenset[int] = frozenset()  # the ids that end an answer; each subclass sets them from its tokenizer/config

    def __init__(self, model, tokenizer, *, context_window: int, prefill_chunk: int = 1024,
                 max_new_tokens: int = Sampling.max_new_tokens, temperature: float = Sampling.temperature, top_p: float = Sampling.top_p) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_window = context_window
        self.prefill_chunk = prefill_chunk
        self.sampling = Sampling(max_new_tokens, temperature, top_p)

    @staticmethod
    def load_model(model_cls, folder: Path, placement: Placement, adapter: str = "", **kwargs):
        """The model in `folder` on `placement`, with the adapter `adapter` (a folder; empty: none) applied."""
        model = load_causal_lm(model_cls, folder, placement, **kwargs)
        return apply_adapter(model, adapter) if adapter else model

    @property
    def placement(self) -> Placement | None:
        """Device, dtype and quantization of the loaded model."""
        return getattr(self.model, "kb_placement", None)

    @abstractmethod
    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """The model's input for a chat, ready for the assistant's turn."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The text of generated ids."""

    @abstractmethod
    def training_tokens(self) -> TrainingTokens:
        """(prompt_ids, answer_ids, eos_id, pad_id) for encoding fine-tuning examples."""

    @abstractmethod
    def save_tokenizer(self, out: Path, adapter: Path) -> None:
        """Write what loads the tokenizer into `out`, a checkpoint merged with the adapter in `adapter`."""

    def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None) -> Iterator[str]:
        gen = self.prepare(messages, max_new_tokens, temperature, top_p)
        ids = self.prompt_ids(messages)
        budget = self.context_window - len(ids)
        if budget <= 0:
            raise ModelError(
                f"the prompt takes {len(ids)} tokens but the context window is {self.context_window}; "
                "ask with fewer or shorter passages (retrieval.k) or raise llm.n_ctx"
            )
        tokens = generate_ids(
            self.model, ids, max_new_tokens=min(gen.max_new_tokens, budget), temperature=gen.temperature,
            top_p=gen.top_p, eos_ids=self.eos_ids, prefill_chunk=self.prefill_chunk,
        )
        yield from stream_text(tokens, self.decode, stop)

    def count_message_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))


def torch_options(settings) -> dict:
    """The keyword arguments both transformers backends take from LLMSettings (from_folder's)."""
    t = settings.transformers
    return {"quantize": t.quantize, "device": t.device, "dtype": t.dtype,
            "n_ctx": settings.n_ctx, "prefill_chunk": settings.transformers.prefill_chunk,
            "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature,
            "top_p": settings.top_p, "adapter": settings.adapter}
