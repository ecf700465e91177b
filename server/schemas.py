"""The HTTP API's request and response bodies (pydantic), which FastAPI turns into the OpenAPI schema.

The chat types follow OpenAI's chat-completions schema closely enough for the official clients, plus
two extra fields (`citations`, `kb_status`) that those clients ignore. The KB types mirror kb's own
dataclasses (`DocumentInfo`, `Hit`, `Answer`). This module leaves out behaviour: routes live in
openai_routes.py and kb_routes.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kb.config import KB_NAME_PATTERN, AnswerModeSetting, RetrievalMode
from kb.types import DocumentInfo, Hit

NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_PATTERN = KB_NAME_PATTERN
NOT_BLANK = r"\S"  # at least one character that is not white space


ANSWER_MODE_DOC = ("How the answer is written (default: answer.mode): generate (the chat model), extract (the "
                   "passages' sentences that answer, quoted, no model call) or auto (extract when the model cannot "
                   "write the question's language, or no chat model is installed).")


class ErrorBody(BaseModel):
    message: str = Field(description="What went wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, ...")
    code: str | None = Field(None, description="A short machine-readable reason, where there is one.")


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape, so OpenAI clients show the message."""

    error: ErrorBody


# -- OpenAI-compatible chat ---------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request. temperature, top_p and max_tokens apply to this answer; other fields are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="'kb:<name>' (or just '<name>'): the knowledge base that answers.")
    messages: list[ChatMessage] = Field(min_length=1, description="Earlier user/assistant turns are the chat "
                                        "history; the last message is the question. System messages are ignored.")
    stream: bool = Field(False, description="Server-sent events in OpenAI's chunk format, ending with [DONE].")
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature (default: llm.temperature).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass (default: llm.top_p).")
    max_tokens: int | None = Field(None, ge=1, description="Longest answer in tokens; at most answer.answer_tokens, "
                                   "the room the prompt leaves for the answer.")
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is generated.")
    answer_mode: AnswerModeSetting | None = Field(None, description="kb's extra field. " + ANSWER_MODE_DOC)


class CitationOut(BaseModel):
    n: int = Field(description="The [n] marker in the answer.")
    path: str
    page: int | None
    section: str
    text: str = Field(description="The cited passage.")
    sentence: str = Field(description="The answer sentence that cites it.")
    overlap: float
    inferred: bool = Field(description="True when kb attributed a sentence the model left unmarked.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[CitationOut] = Field(description="kb's extra field: the passages the answer cites.")
    kb_status: str = Field(description="kb's extra field: answered, refused, not_found or general.")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed answer; the last one with choices carries the citations."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    citations: list[CitationOut] | None = None
    kb_status: str | None = None


class ModelCard(BaseModel):
    id: str = Field(description="'kb:<name>'")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kb"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- knowledge bases --------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class KBCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description=f"The new knowledge base's name: {NAME_RULE}.")


class KBInfo(BaseModel):
    name: str
    documents: int
    chunks: int
    bytes_on_disk: int | None = Field(description="Size of the KB's folder; null for a KB kept in Milvus.")
    embedder: str = Field(description="The main embedding model.")
    embedders: list[str] = Field(description="Every embedding model the KB is searched with, the main one first.")
    created_at: float | None


class KBList(BaseModel):
    data: list[KBInfo]


class Deleted(BaseModel):
    deleted: str


class DocumentList(BaseModel):
    data: list[DocumentInfo] = Field(description="kb's record of each document (kb.types.DocumentInfo).")


class FileResultOut(BaseModel):
    filename: str = Field(description="The uploaded file's (sanitized) name.")
    path: str | None = Field(description="Where the server stored it, the document's path in the KB; null for a "
                                         "file that failed to ingest (it is not kept).")
    status: str = Field(description="added, updated, unchanged or failed.")
    chunks: int
    reason: str = Field(description="Why it failed, if it did.")
    ocr_pages: int = Field(0, description="Pages (or images) of it read by OCR: scans and pictures.")


class UploadReport(BaseModel):
    files: list[FileResultOut]
    chunks_added: int
    chunks_removed: int
    seconds: float


class Filters(BaseModel):
    paths: list[str] | None = Field(None, description="Globs or folders of document paths to search in.")
    file_types: list[str] | None = Field(None, description="File types, e.g. ['pdf', 'md'].")
    doc_ids: list[str] | None = Field(None, description="Only these documents.")
    mode: RetrievalMode | None = Field(None, description="Retriever (default: retrieval.mode).")
    rerank: bool | None = Field(None, description="Use (true) or skip (false) a configured reranker.")


class SearchRequest(Filters):
    query: str = Field(pattern=NOT_BLANK, description="What to look for (any language).")
    k: int | None = Field(None, ge=1, le=100, description="How many passages (default: retrieval.k).")


class SearchResponse(BaseModel):
    hits: list[Hit] = Field(description="Best first (kb.types.Hit): `score` is 0..1, higher is more relevant; "
                            "`ranks` holds its rank in each retriever that found it.")


class Turn(BaseModel):
    question: str
    answer: str


class AskRequest(Filters):
    question: str = Field(pattern=NOT_BLANK, description="The question (any language).")
    answer_mode: AnswerModeSetting | None = Field(None, description=ANSWER_MODE_DOC)
    history: list[Turn] = Field(default_factory=list, description="Earlier turns, oldest first.")


class AnswerOut(BaseModel):
    """kb's full Answer (see kb/answer/types.py): text, verified citations, passages, timings."""

    question: str
    query: str
    text: str
    status: Literal["answered", "refused", "not_found", "general"]
    refused: bool
    citations: list[CitationOut]
    passages: list[dict[str, Any]]
    left_out: list[dict[str, Any]]
    unsupported: list[str]
    dropped_markers: list[int]
    language: str
    backend: str
    prompt_tokens: int
    timings: dict[str, float | None]
    answer_mode: Literal["generate", "extract"] = Field(
        "generate", description="generate: written by the chat model; extract: quoted from the passages.")
    repetition_stopped: bool = Field(False, description="The model began repeating itself and was stopped there.")
