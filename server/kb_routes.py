"""Knowledge-base routes: list/create/delete KBs, upload/list/delete documents, search, ask, and a cited passage
drawn on its page (kb/evidence.py).

They call the answer service (kb/answer/service.py) the CLI and the web app use: its KBs, its answers (streamed
through server/streaming.py) and its one upload rule (kb.uploads.add_uploads: a type kb cannot read is refused
with 415, a file over server.max_upload_mb with 413, and a file that failed to ingest is not kept). Uploads are
saved under `$KB_HOME/uploads/<kb>/<file name>` (the name stripped of any folder part, so nothing is written
outside that folder; a file of the same name is replaced, which re-ingests it as a new version) and then
ingested. `ask` returns kb's whole Answer.
This module leaves out the OpenAI-shaped chat (openai_routes.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from kb.evidence import view
from kb.uploads import remove_document

from .deps import BUSY_ERRORS, ERRORS, MODEL_ERRORS, ServiceDep
from .schemas import (
    NAME_PATTERN,
    NAME_RULE,
    AnswerOut,
    AskRequest,
    Deleted,
    DocumentList,
    ErrorResponse,
    FileResultOut,
    KBCreate,
    KBInfo,
    KBList,
    SearchRequest,
    SearchResponse,
    UploadReport,
)
from .streaming import Pump

KBName = Annotated[str, PathParam(pattern=NAME_PATTERN, description=f"The knowledge base: {NAME_RULE}.")]
router = APIRouter(prefix="/v1/kbs", tags=["knowledge bases"])
CONFLICT = {409: {"model": ErrorResponse, "description": "Exists already, or another process is writing it."}}
UPLOAD_ERRORS = {
    413: {"model": ErrorResponse, "description": "Larger than server.max_upload_mb."},
    415: {"model": ErrorResponse, "description": "A file type kb cannot read."},
}


def _info(kb) -> KBInfo:
    stats = kb.stats()
    return KBInfo(name=stats["name"], documents=stats["documents"], chunks=stats["chunks"],
                  bytes_on_disk=stats["bytes_on_disk"], embedder=stats["embedder"], embedders=stats["embedders"],
                  created_at=stats["created_at"])


def _filters(body) -> dict:
    return {k: v for k, v in body.model_dump(include={"paths", "file_types", "doc_ids", "mode", "rerank"}).items()
            if v is not None}


@router.get("", response_model=KBList, summary="All knowledge bases, with document and chunk counts")
def list_kbs(state: ServiceDep) -> KBList:
    return KBList(data=[_info(state.kb(name)) for name in state.names()])


@router.post("", response_model=KBInfo, status_code=201, responses={**ERRORS, **CONFLICT},
             summary="Create an empty knowledge base")
def create_kb(body: KBCreate, state: ServiceDep) -> KBInfo:
    return _info(state.create(body.name))


@router.get("/{name}", response_model=KBInfo, responses=ERRORS, summary="One knowledge base")
def get_kb(name: KBName, state: ServiceDep) -> KBInfo:
    return _info(state.kb(name))


@router.delete("/{name}", response_model=Deleted, responses={**ERRORS, **CONFLICT},
               summary="Delete a knowledge base, its index and its uploaded files")
def delete_kb(name: KBName, state: ServiceDep) -> Deleted:
    state.delete(name)
    return Deleted(deleted=name)


@router.get("/{name}/documents", response_model=DocumentList, responses=ERRORS, summary="The documents of a KB")
def list_documents(name: KBName, state: ServiceDep) -> DocumentList:
    return DocumentList(data=state.kb(name).documents())


@router.post("/{name}/documents", response_model=UploadReport, responses={**ERRORS, **CONFLICT, **UPLOAD_ERRORS},
             summary="Upload documents (multipart field 'file', repeatable) and ingest them")
def upload_documents(name: KBName, file: Annotated[list[UploadFile], File(description="One or more documents.")],
                     state: ServiceDep) -> UploadReport:
    uploaded = state.upload(name, [(f.filename, f.file, f.size) for f in file], refuse_all=True)
    out = [FileResultOut(filename=r.filename, path=str(r.path) if r.path else None, status=r.status,
                         chunks=r.chunks, reason=r.reason, ocr_pages=r.ocr_pages) for r in uploaded.files]
    if all(r.status == "failed" for r in out):
        raise HTTPException(422, "; ".join(f"{r.filename}: {r.reason}" for r in out))
    report = uploaded.ingest
    return UploadReport(files=out, chunks_added=report.chunks_added, chunks_removed=report.chunks_removed,
                        seconds=report.seconds)


@router.delete("/{name}/documents/{doc_id}", response_model=DocumentList, responses={**ERRORS, **CONFLICT},
               summary="Remove a document (by its doc_id) from the KB")
def delete_document(name: KBName, doc_id: str, state: ServiceDep) -> DocumentList:
    kb = state.kb(name)
    if doc_id not in {d.doc_id for d in kb.documents()}:
        raise HTTPException(404, f"no document with doc_id '{doc_id}' in KB '{kb.name}' "
                                 f"(GET /v1/kbs/{kb.name}/documents lists them)")
    removed = remove_document(kb, doc_id)  # a file this server stored goes with its document
    return DocumentList(data=removed)


@router.post("/{name}/search", response_model=SearchResponse, responses=ERRORS,
             summary="The most relevant passages, best first")
def search(name: KBName, body: SearchRequest, state: ServiceDep) -> SearchResponse:
    hits = state.kb(name).search(body.query, body.k, **_filters(body))
    return SearchResponse(hits=hits)


@router.post("/{name}/ask", response_model=AnswerOut, responses={**ERRORS, **MODEL_ERRORS, **BUSY_ERRORS},
             summary="Answer a question from the KB: kb's full Answer with citations and passages")
async def ask(name: KBName, body: AskRequest, request: Request, state: ServiceDep) -> AnswerOut:
    if not body.question.strip():
        raise HTTPException(400, "the question is empty")
    kb = await run_in_threadpool(state.kb, name)
    history = [(t.question, t.answer) for t in body.history]
    filters = _filters(body)
    pump = Pump(lambda: state.answer(kb, body.question, history, answer_mode=body.answer_mode, **filters))
    async for _ in pump.pieces(request):
        pass
    answer = pump.answer
    if answer is None:
        raise HTTPException(499, "the client went away before the answer was complete")
    return AnswerOut(**answer.to_dict())


PNG_OR_BOXES = {200: {"content": {"image/png": {}, "application/json": {}},
                      "description": "The page as a PNG with the passage highlighted; ?format=json: its boxes (page "
                                     "units and image pixels), the page size and the scale, or, for formats without "
                                     "pages, the section's text with the sentence's offsets."},
                404: {"model": ErrorResponse, "description": "No such KB or passage."},
                406: {"model": ErrorResponse, "description": "A PNG was asked of a format without pages."},
                409: {"model": ErrorResponse, "description": "The original file moved or changed since ingest."}}


@router.get("/{name}/passages/{passage_id}/view", responses={**ERRORS, **PNG_OR_BOXES}, response_class=Response,
            summary="A passage on its page: a PNG with the cited sentence highlighted (?format=json: the boxes)")
def view_passage(name: KBName,
                 passage_id: Annotated[int, PathParam(ge=0, le=2**63 - 1, description="The passage's chunk_id.")],
                 state: ServiceDep, format: Literal["png", "json"] = "png",  # noqa: A002 (the query's name)
                 sentence: Annotated[str | None, Query(max_length=2000, description="The cited sentence to highlight "
                                                       "(default: the whole passage).")] = None):
    found = view(state.kb(name), passage_id, sentence)
    if format == "json":
        data = found.to_dict()
        data.pop("image")  # a path in the server's cache says nothing to a client
        return JSONResponse(data)
    if found.image is None:
        raise HTTPException(406, f"passage {passage_id} is from a {found.path.rsplit('.', 1)[-1]} file, which has no "
                                 "page image; ?format=json gives its section's text with the sentence marked")
    # the bytes, not the cached file's path: another request may evict it from the cache before it is sent
    with open(found.image, "rb") as f:
        png = f.read()
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
