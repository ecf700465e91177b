"""OpenAI-compatible routes: `GET /v1/models` (one model per KB, 'kb:<name>') and
`POST /v1/chat/completions`, plain or streamed as server-sent events.

The last message is the question; earlier user/assistant pairs are the history, which kb uses to turn
a follow-up into a standalone search; the model sees them by the answer service's one rule (refusals left out,
[n] markers removed). The answer's citations travel in the extra `citations` field
(in the last chunk when streaming), which OpenAI clients ignore and expose as extra data. temperature,
top_p and max_tokens apply to the request (max_tokens up to answer.answer_tokens); other sampling
fields are accepted and ignored. This module leaves out tools, images and n > 1.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from kb.answer.service import AnswerService
from kb.answer.types import Answer
from kb.errors import ConfigError, KBError, KBNotFoundError

from .deps import BUSY_ERRORS, ERRORS, MODEL_ERRORS, ServiceDep
from .schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    CitationOut,
    Delta,
    ModelCard,
    ModelList,
    Usage,
)
from .streaming import Pump

router = APIRouter(prefix="/v1", tags=["openai"])
PREFIX = "kb:"

_SSE_DOC = {
    "description": "With `stream: false`, one chat.completion. With `stream: true`, server-sent events: "
                   "`data: <chat.completion.chunk JSON>` lines, the last chunk with finish_reason, "
                   "`citations` and `kb_status`, then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def kb_name(model: str) -> str:
    """The KB a model name selects: 'kb:<name>' or a bare name."""
    return model[len(PREFIX):] if model.startswith(PREFIX) else model


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(part.text or "" for part in message.content if part.type == "text")
    return message.content or ""


def question_and_history(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message and the (question, answer) pairs before it. System messages are skipped."""
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise HTTPException(400, "the last message must come from the user (it is the question)")
    question = _text(turns[-1]).strip()
    if not question:
        raise HTTPException(400, "the question is empty: the last user message has no text")
    history, pending = [], None
    for m in turns[:-1]:
        if m.role == "user":
            pending = _text(m)
        elif pending is not None:
            history.append((pending, _text(m)))
            pending = None
    return question, history


def citations(answer: Answer) -> list[CitationOut]:
    return [CitationOut(**c) for c in answer.to_dict()["citations"]]


def _open(state: AnswerService, model: str):
    """The KB a model name selects; 404 naming the models there are when there is none (or the name is invalid)."""
    try:
        return state.kb(kb_name(model))
    except (KBNotFoundError, ConfigError) as e:
        known = ", ".join(PREFIX + n for n in state.names()) or "none yet"
        raise HTTPException(404, f"unknown model '{model}': no knowledge base named '{kb_name(model)}' "
                                 f"(models, from GET /v1/models: {known})") from e


@router.get("/models", response_model=ModelList, summary="The knowledge bases, as OpenAI models")
def list_models(state: ServiceDep) -> ModelList:
    cards = []
    for name in state.names():
        created = state.kb(name).manifest.get("created_at") or 0
        cards.append(ModelCard(id=PREFIX + name, created=int(created)))
    return ModelList(data=cards)


@router.get("/models/{model}", response_model=ModelCard, responses=ERRORS, summary="One knowledge base as a model")
def get_model(model: str, state: ServiceDep) -> ModelCard:
    kb = _open(state, model)
    return ModelCard(id=PREFIX + kb.name, created=int(kb.manifest.get("created_at") or 0))


@router.post("/chat/completions", response_model=ChatCompletion, responses={**ERRORS, **MODEL_ERRORS, **BUSY_ERRORS, 200: _SSE_DOC},
             summary="Answer from a knowledge base (OpenAI chat completions; model 'kb:<name>')")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           state: ServiceDep):
    question, history = question_and_history(body.messages)
    kb = await run_in_threadpool(_open, state, body.model)
    model = PREFIX + kb.name
    sampling = {"temperature": body.temperature, "top_p": body.top_p, "max_new_tokens": body.max_tokens}
    pump = Pump(lambda: state.answer(kb, question, history, answer_mode=body.answer_mode, sampling=sampling))
    pieces = pump.pieces(request)
    first = await anext(pieces, None)  # errors before the first piece become ordinary HTTP errors
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(pump, pieces, first, ident, created, model, state, usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    async for _ in pieces:
        pass
    answer = pump.answer
    if answer is None:
        raise HTTPException(499, "the client went away before the answer was complete")
    tokens = await run_in_threadpool(_completion_tokens, state, answer)
    return ChatCompletion(
        id=ident, created=created, model=model, citations=citations(answer), kb_status=answer.status,
        choices=[Choice(message={"role": "assistant", "content": answer.text})],
        usage=Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=tokens,
                    total_tokens=answer.prompt_tokens + tokens))


def _completion_tokens(state: AnswerService, answer: Answer) -> int:
    """The answer's tokens in the model's vocabulary; none for a quoted answer (no model wrote it)."""
    return 0 if answer.answer_mode == "extract" else state.backend().count_tokens(answer.text)


def _sse(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"


async def _events(pump: Pump, pieces: AsyncIterator[str], first: str | None, ident: str, created: int, model: str,
                  state: AnswerService, include_usage: bool) -> AsyncIterator[str]:
    """The SSE stream: a role chunk, one chunk per text piece, a final chunk with the citations, [DONE]."""
    def chunk(delta: Delta, finish=None, **extra) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=ident, created=created, model=model, **extra,
                                   choices=[ChunkChoice(delta=delta, finish_reason=finish)])

    yield _sse(chunk(Delta(role="assistant", content="")))
    try:
        piece = first
        while piece is not None:
            if piece:
                yield _sse(chunk(Delta(content=piece)))
            piece = await anext(pieces, None)
    except KBError as e:  # the status line is sent already: report in the stream, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'invalid_request_error'}})}\n\n"
        return
    finally:
        await pieces.aclose()  # an abandoned response stops the answer now, not when it is collected
    answer = pump.answer
    if answer is None:
        return  # the client is gone
    yield _sse(chunk(Delta(), "stop", citations=citations(answer), kb_status=answer.status))
    if include_usage:
        tokens = await run_in_threadpool(_completion_tokens, state, answer)
        yield _sse(ChatCompletionChunk(id=ident, created=created, model=model, choices=[], usage=Usage(
            prompt_tokens=answer.prompt_tokens, completion_tokens=tokens,
            total_tokens=answer.prompt_tokens + tokens)))
    yield "data: [DONE]\n\n"
