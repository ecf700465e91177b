"""Sentence embeddings with ONNX Runtime: kb's fast path for its packaged embedders.

Runs a folder's `onnx/model_qint8.onnx` (inputs input_ids / attention_mask, output a normalised
`sentence_embedding`, as kb.ingest.e5_onnx writes it for multilingual-e5-small and all-MiniLM-L6-v2)
with the folder's `tokenizer.json`, through the `tokenizers` library directly. No torch is imported.
Batches are sorted by length so that little padding is computed. A single query runs on a one-thread
session: on a busy 2-core machine, spreading one short input over two threads makes it wait for the
other core (see kb.ingest.embed.SMALL_BATCH).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kb.errors import ModelError

ONNX_FILE = "onnx/model_qint8.onnx"


def has_onnx(folder: str | Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file() and (Path(folder) / "tokenizer.json").is_file()


class OnnxSentenceModel:
    """encode(texts) -> normalised float32 vectors; `.tokenizer` is the `tokenizers.Tokenizer` (no truncation)."""

    def __init__(self, folder: str | Path, max_seq_length: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ModelError(f"the ONNX embedder needs the package '{e.name}', a dependency of kb that is not "
                             f"installed: pip install {e.name}, or set embedding.backend to torch") from e
        self.folder = Path(folder)
        self._ort = ort
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_seq_length = max_seq_length or _max_length(self.folder)
        self.pad_id = self.tokenizer.token_to_id("<pad>") or 0
        # WordPiece and BPE models name their unknown token (MiniLM's [UNK]); Unigram (e5's) does not: <unk>.
        self.unk_id: int | None = self.tokenizer.token_to_id(getattr(self.tokenizer.model, "unk_token", None) or "<unk>")
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        self.dim = int(self._session(0).get_outputs()[0].shape[-1])

    def _session(self, threads: int):
        """One session per thread count (0 = ONNX Runtime's default: all cores)."""
        with self._lock:
            if threads not in self._sessions:
                options = self._ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.log_severity_level = 3
                try:
                    self._sessions[threads] = self._ort.InferenceSession(
                        str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
                except Exception as e:  # onnxruntime raises its own exception types
                    raise ModelError(f"cannot load {self.folder / ONNX_FILE} ({type(e).__name__}: {e}); "
                                     f"delete {self.folder} and kb rebuilds it") from e
            return self._sessions[threads]

    def encode(self, texts: Sequence[str], batch_size: int = 32, threads: int = 0) -> np.ndarray:
        """Normalised embeddings of `texts` (float32, [n, dim]); inputs longer than max_seq_length are cut."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self._session(threads)
        encodings = self.tokenizer.encode_batch(list(texts))
        limit = self.max_seq_length
        ids = [e.ids if len(e.ids) <= limit else e.ids[:limit - 1] + e.ids[-1:] for e in encodings]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            batch = np.full((len(chunk), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                batch[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            out[chunk] = session.run(None, {"input_ids": batch, "attention_mask": mask})[0]
        return out


def _max_length(folder: Path) -> int:
    """sentence_bert_config.json's max_seq_length, else 512."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 512
