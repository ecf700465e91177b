"""The token loop shared by the transformers backends (chatglm2, hf) and the GPU benchmark.

Prefill runs in chunks through the KV cache, so a 32K-token prompt never materialises 32K-row
activations or a 32K x vocab logits tensor: only the last position's logits are computed. Decode
samples one token at a time (greedy at temperature 0, else temperature + top-p) and stops at eos.
Text streaming decodes the growing id list and holds back an unfinished UTF-8 character or the
possible start of a stop string. It leaves out batching and beam search.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

from kb.llm.base import held_back, truncate_at_stop


def cache_keyword(model) -> str:
    """The forward() keyword for the KV cache: 'cache' from transformers 5.2x, else 'past_key_values'."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    """An empty DynamicCache for `model`."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older signature
        return DynamicCache()


def forward_last(model, ids, cache, cache_kw: str):
    """Run `ids` (1 x n) through the model, extending `cache`; logits of the last position only."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
    return out.logits[:, -1, :]


def prefill(model, input_ids: list[int], cache, *, chunk: int = 0):
    """Feed the prompt through the cache `chunk` tokens at a time (0: all at once)."""
    import torch

    ids = torch.tensor([input_ids], dtype=torch.long, device=model.device)
    kw = cache_keyword(model)
    step = chunk if chunk > 0 else ids.shape[1]
    logits = None
    for start in range(0, ids.shape[1], step):
        logits = forward_last(model, ids[:, start : start + step], cache, kw)
    return logits


def pick_token(logits, temperature: float, top_p: float, generator=None) -> int:
    """Greedy when temperature is 0, else sample from the top-p nucleus."""
    import torch

    if temperature <= 0:
        return int(logits.argmax(dim=-1)[0])
    probs = torch.softmax(logits.float() / temperature, dim=-1)[0]
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def generate_ids(
    model,
    input_ids: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_ids: set[int] | frozenset[int] = frozenset(),
    prefill_chunk: int = 0,
    generator=None,
) -> Iterator[int]:
    """Yield new token ids until eos (not yielded) or `max_new_tokens`."""
    import torch

    with torch.inference_mode():
        cache = new_cache(model)
        logits = prefill(model, input_ids, cache, chunk=prefill_chunk)
        kw = cache_keyword(model)
        for _ in range(max_new_tokens):
            token = pick_token(logits, temperature, top_p, generator)
            if token in eos_ids:
                return
            yield token
            step = torch.tensor([[token]], dtype=torch.long, device=logits.device)
            logits = forward_last(model, step, cache, kw)


def stream_text(
    ids: Iterator[int], decode: Callable[[list[int]], str], stop: list[str] | None = None
) -> Iterator[str]:
    """Turn a stream of ids into text pieces, cutting at the first stop string."""
    out: list[int] = []
    sent = 0
    text = ""
    for token in ids:
        out.append(token)
        text = decode(out)
        cut, found = truncate_at_stop(text, stop)
        if found:
            if len(cut) > sent:
                yield cut[sent:]
            return
        ready = len(text) - held_back(text, stop)
        if text.endswith("\ufffd"):  # an unfinished multi-byte character
            ready = min(ready, len(text.rstrip("\ufffd")))
        if ready > sent:
            yield text[sent:ready]
            sent = ready
    if len(text) > sent:
        yield text[sent:]
