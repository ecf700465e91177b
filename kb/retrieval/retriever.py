"""What the answer chain asks of a knowledge base, as one typed object: `Retriever`.

It searches (kb/retrieval/hybrid.py's hybrid retrieval with the KB's embedders, an optional reranker and the caller's
filters), and it answers the questions the chain asks about passages: how similar they are to the query (for
refusal and for quoting), and a document's text between two offsets (for merging touching hits). The chain
is built with a Retriever (kb/answer/chain.py), so a test or another app can hand it any object with these methods.
`SearchOptions` is a search's filters and switches, checked once. This module leaves out the KB's folder and
store (kb/handle.py) and LangChain's retriever interface (kb/retrieval/langchain_retriever.py).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kb.config import RETRIEVAL_MODES, Settings
from kb.errors import KBError
from kb.handle import Handle
from kb.ingest.embed import Embedder
from kb.retrieval.glossary import gloss
from kb.retrieval.hybrid import DenseSide, Filter, search
from kb.retrieval.rerank import get_reranker
from kb.stores import Store
from kb.text.lang import language
from kb.types import Hit


@dataclass(frozen=True)
class SearchOptions:
    """How to search: the retriever (`mode`: hybrid, dense, bm25; None = retrieval.mode), the filter, and
    `rerank` (None: as configured; False: skip the reranker; True: require one)."""

    mode: str | None = None
    where: Filter = field(default_factory=Filter)
    rerank: bool | None = None

    @classmethod
    def of(cls, mode: str | None = None, paths: Sequence[str] | None = None, file_types: Sequence[str] | None = None,
           doc_ids: Sequence[str] | None = None, rerank: bool | None = None) -> SearchOptions:
        """From the keyword arguments of KnowledgeBase.search (KBError naming a bad mode)."""
        if mode is not None and mode not in RETRIEVAL_MODES:
            raise KBError(f"unknown retrieval mode '{mode}': use {', '.join(RETRIEVAL_MODES)}")
        return cls(mode, Filter(tuple(paths or ()), tuple(file_types or ()), tuple(doc_ids or ())), rerank)


DEFAULT = SearchOptions()  # the settings' mode, no filter, the configured reranker
QUERY_VECTORS = 64  # query vectors a Retriever keeps (a few per question: the question, its translation, models)


class Retriever:
    """Search one KB, and compare queries with its passages."""

    def __init__(self, handle: Handle, settings: Settings, embedder: Callable[[], Embedder]) -> None:
        self._handle = handle
        self._settings = settings
        self.embedder = embedder  # the KB's own embedder, loaded on first use
        self._vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (embedder, model, text) -> query vector
        self._vectors_lock = threading.Lock()

    def query_vector(self, embedder: Embedder, text: str) -> np.ndarray:
        """The query vector of `text` by `embedder`, embedded once per question: search, the refusal check and
        quoting all compare the same question with passages (the last QUERY_VECTORS texts are kept)."""
        key = (id(embedder), getattr(embedder, "model_id", ""), text)
        with self._vectors_lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                return vector
        vector = embedder.encode([text], query=True)[0]
        with self._vectors_lock:
            self._vectors[key] = vector
            while len(self._vectors) > QUERY_VECTORS:
                self._vectors.popitem(last=False)
        return vector

    def search(self, query: str, k: int | None = None, options: SearchOptions = DEFAULT,
               also: Sequence[str] = ()) -> list[Hit]:
        """The k most relevant passages (retrieval.k if None), best first; `also` holds other wordings of the
        query (a translation) whose rankings are fused with the query's."""
        if not query or not query.strip():
            raise KBError("the search query is empty")
        settings = self._settings.retrieval
        if options.rerank and not settings.reranker:
            raise KBError("rerank asked for, but no reranker is configured: set retrieval.reranker to a "
                          "CrossEncoder name or folder")
        reranker = None
        if settings.reranker and options.rerank is not False:
            reranker = get_reranker(settings.reranker, self._settings.embedding.device)

        mode = options.mode or settings.mode
        main = self.embedder()
        sides = [DenseSide(None, query_embedding(main, self.query_vector))]
        if mode != "bm25":
            sides += [DenseSide(e.model_id, query_embedding(e, self.query_vector), indexed_by(e))
                      for e in self.ensemble()]
        with self._handle.lock:
            return search(self._handle.store(), sides, query, settings, k or settings.k, mode, options.where,
                          reranker, also=tuple(q for q in also if q and q.strip()),
                          dictionary=self.dictionary_query(query, mode))

    def ensemble(self) -> list[Embedder]:
        """The KB's other embedders (none for a KB of one embedder)."""
        return self._handle.ensemble()

    def store(self) -> Store:
        """The KB's current store (for benchmarks and tools that search it directly)."""
        return self._handle.store()

    def dictionary_query(self, query: str, mode: str | None = None) -> str | None:
        """The query glossed word by word into the other language (kb/retrieval/glossary.py, CC-CEDICT) for the dictionary
        search across languages, when the search is hybrid and the KB holds passages in the other language."""
        settings = self._settings.retrieval
        if (mode or settings.mode) != "hybrid" or settings.dictionary_weight <= 0:
            return None
        other = "en" if language(query) == "zh" else "zh"
        if not self.languages().get(other):
            return None
        return gloss(query, self._settings.models_dir)

    def languages(self) -> dict[str, int]:
        """How many chunks of each language ('en', 'zh') the KB holds."""
        with self._handle.lock:
            return dict(self._handle.store().centering().counts)

    def refusal_similarity(self, lang: str, passage_lang: str | None = None) -> float:
        """The embedder's calibrated similarity below which a passage in `passage_lang` (default: `lang`) does not
        answer a question in `lang` (kb.ingest.embed.REFUSAL_SIMILARITY; 0.0: none known)."""
        return self.embedder().refusal_similarity(lang, passage_lang or lang)

    def term_rarity(self, terms: list[str]) -> dict[str, float]:
        """Each keyword term's IDF over the KB's chunks (BM25's form), for weighting a question's terms when
        quoting; {} where the store cannot count them."""
        with self._handle.lock:
            store = self._handle.store()
            counts = store.term_document_frequency(terms)
            total = store.chunk_count() if counts else 0
        return {t: math.log(1 + (total - n + 0.5) / (n + 0.5)) for t, n in counts.items()}

    def passage_similarity(self, query: str, chunk_ids: list[int]) -> dict[int, float] | None:
        """Cosine similarity of the query to each chunk, or None when the embedder cannot read most of it."""
        both = self.passage_similarities(query, dict.fromkeys(chunk_ids, language(query)))
        return None if both is None else {cid: raw for cid, (raw, _) in both.items()}

    def refusal_floor(self, lang: str, passage_lang: str) -> float:
        """The raw cosine a passage in another language must reach besides its centred refusal similarity."""
        return self.embedder().refusal_floor(lang, passage_lang)

    def passage_similarities(self, query: str, chunks: dict[int, str]) -> dict[int, tuple[float, float]] | None:
        """(raw cosine, cosine in the KB's language-centred space) of the query to each chunk, given as chunk id ->
        the chunk's language; None when the embedder cannot read most of the query."""
        embedder = self.embedder()
        readable = getattr(embedder, "readable", None)
        if readable is not None and readable(query)[1] > 0.5:
            return None
        vector = self.query_vector(embedder, query)
        with self._handle.lock:
            store = self._handle.store()
            vectors = store.vectors_of(list(chunks))
            centering = store.centering()
        ids = [cid for cid in chunks if cid in vectors]
        if not ids:
            return {}
        raw = np.stack([vectors[cid] for cid in ids])
        centred = centering.vectors(raw, [chunks[cid] for cid in ids]) @ centering.query(vector, language(query))
        return {cid: (float(r), float(c)) for cid, r, c in zip(ids, raw @ vector, centred)}

    def similarity(self, query: str, texts: list[str]) -> np.ndarray:
        """Cosine similarity of the query to each text, in the KB's language-centred space (so a question
        and a sentence in different languages compare by meaning)."""
        embedder = self.embedder()
        with self._handle.lock:
            centering = self._handle.store().centering()
        vectors = centering.vectors(embedder.encode(texts), [language(t) for t in texts])
        return vectors @ centering.query(self.query_vector(embedder, query), language(query))

    def span_text(self, doc_id: str, start: int, end: int) -> str | None:
        """The document's text between two character offsets (None if the document is gone)."""
        with self._handle.lock:
            text = self._handle.store().document_text(doc_id)
        return None if text is None else text[start:end]


def query_embedding(embedder: Embedder, vector: Callable[[Embedder, str], np.ndarray] | None = None
                    ) -> Callable[[str], tuple[np.ndarray, float]]:
    """text -> (the query vector of the part the model reads, the share it reads); `vector(embedder, text)`
    embeds (default: now; a Retriever passes its query_vector, which embeds a question once)."""
    encode = vector or (lambda e, text: e.encode([text], query=True)[0])

    def embed(text: str) -> tuple[np.ndarray, float]:
        readable, unknown = embedder.readable(text)  # once: its share is Embedder.read_share's
        return encode(embedder, readable if readable.strip() else text), 1.0 - unknown
    return embed


def indexed_by(embedder: Embedder) -> Callable[[str], bool]:
    """Whether an ensemble member indexed a chunk of this text, as search needs it for each candidate: by the
    text's language where the model declares its languages (microseconds; ingest's exact rule, Embedder.reads,
    tokenizes the text: at 100k chunks, dense search p50 25.7 ms with it, 18.4 ms without), else by that rule."""
    if embedder.languages:
        return lambda text: language(text) in embedder.languages
    return embedder.reads
