"""Optional cross-encoder rerank (sentence-transformers CrossEncoder, e.g. BAAI/bge-reranker-base).

Off by default: no reranker ships offline. Scores are the sigmoid of the model's logit, in [0, 1].
"""

from __future__ import annotations

import threading

import numpy as np

from kb.errors import ModelError

_cache: dict[str, Reranker] = {}
_lock = threading.Lock()


def get_reranker(name: str, device: str = "cpu") -> Reranker:
    with _lock:
        if name not in _cache:
            _cache[name] = Reranker(name, device)
        return _cache[name]


class Reranker:
    def __init__(self, name: str, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(name, device=device)
        except Exception as e:
            raise ModelError(f"reranker '{name}' could not be loaded ({type(e).__name__}: {e}); give a local "
                             "folder path, or set retrieval.reranker to '' to turn rerank off") from e
        self._lock = threading.Lock()

    def __call__(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        import torch

        with self._lock:
            logits = self._model.predict([(query, t) for t in texts], activation_fn=torch.nn.Identity(),
                                         convert_to_numpy=True, show_progress_bar=False)
        logits = np.asarray(logits, dtype=np.float64).reshape(len(texts), -1)[:, -1]
        return (1 / (1 + np.exp(-logits))).tolist()
