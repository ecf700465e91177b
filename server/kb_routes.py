"""Knowledge-base routes: list/create/delete KBs, upload/list/delete documents, search, ask.

They call the KnowledgeBase API and the operations the web app shares (kb/uploads.py: the size limit,
deleting a document with its uploaded file); answers stream through server/streaming.py. Uploads are saved under `$KB_HOME/uploads/<kb>/<file name>` (the name
stripped of any folder part, so nothing is written outside that folder; a file of the same name is
replaced, which re-ingests it as a new version) and then ingested. `ask` returns kb's whole Answer.
This module leaves out the OpenAI-shaped chat (openai_routes.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from kb.answer.loading import LazyBackend
from kb.answer.types import Answer
from kb.ingest.loaders import supported_suffixes
from kb.uploads import remove_document, safe_name, store_upload, too_large

from .deps import ERRORS, MODEL_ERRORS, StateDep
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
from .streaming import Pump, StoppableBackend

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
def list_kbs(state: StateDep) -> KBList:
    return KBList(data=[_info(state.kb(name)) for name in state.names()])


@router.post("", response_model=KBInfo, status_code=201, responses={**ERRORS, **CONFLICT},
             summary="Create an empty knowledge base")
def create_kb(body: KBCreate, state: StateDep) -> KBInfo:
    return _info(state.create(body.name))


@router.get("/{name}", response_model=KBInfo, responses=ERRORS, summary="One knowledge base")
def get_kb(name: KBName, state: StateDep) -> KBInfo:
    return _info(state.kb(name))


@router.delete("/{name}", response_model=Deleted, responses={**ERRORS, **CONFLICT},
               summary="Delete a knowledge base, its index and its uploaded files")
def delete_kb(name: KBName, state: StateDep) -> Deleted:
    state.delete(name)
    return Deleted(deleted=name)


@router.get("/{name}/documents", response_model=DocumentList, responses=ERRORS, summary="The documents of a KB")
def list_documents(name: KBName, state: StateDep) -> DocumentList:
    return DocumentList(data=state.kb(name).documents())


@router.post("/{name}/documents", response_model=UploadReport, responses={**ERRORS, **CONFLICT, **UPLOAD_ERRORS},
             summary="Upload documents (multipart field 'file', repeatable) and ingest them")
def upload_documents(name: KBName, file: Annotated[list[UploadFile], File(description="One or more documents.")],
                     state: StateDep) -> UploadReport:
    kb = state.kb(name)
    supported = supported_suffixes()
    names = [safe_name(f.filename) for f in file]
    for n in names:
        if Path(n).suffix.lower() not in supported:
            raise HTTPException(415, f"unsupported file type '{Path(n).suffix or '(none)'}' ({n}); kb reads "
                                     + ", ".join(sorted(supported)))
    for f, n in zip(file, names, strict=True):
        reason = too_large(n, f.size, state.settings) if f.size is not None else None
        if reason:
            raise HTTPException(413, reason)
    folder = state.uploads(kb.name)
    paths = [store_upload(folder, n, f.file) for f, n in zip(file, names, strict=True)]
    known = {d.path for d in kb.documents()}
    report = kb.ingest(*paths)
    results = {str(Path(r.path).resolve()): r for r in report.files}
    out = []
    for n, p in zip(names, paths, strict=True):
        r = results.get(str(p.resolve()))
        status, chunks, reason = (r.status, r.chunks, r.reason) if r else ("failed", 0, "not ingested")
        if status == "failed" and str(p.resolve()) not in known:
            p.unlink(missing_ok=True)  # nothing of it is in the KB: keep no orphan file
        out.append(FileResultOut(filename=n, path=str(p), status=status, chunks=chunks, reason=reason,
                                 ocr_pages=r.ocr_pages if r else 0))
    if all(r.status == "failed" for r in out):
        raise HTTPException(422, "; ".join(f"{r.filename}: {r.reason}" for r in out))
    return UploadReport(files=out, chunks_added=report.chunks_added, chunks_removed=report.chunks_removed,
                        seconds=report.seconds)


@router.delete("/{name}/documents/{doc_id}", response_model=DocumentList, responses={**ERRORS, **CONFLICT},
               summary="Remove a document (by its doc_id) from the KB")
def delete_document(name: KBName, doc_id: str, state: StateDep) -> DocumentList:
    kb = state.kb(name)
    if doc_id not in {d.doc_id for d in kb.documents()}:
        raise HTTPException(404, f"no document with doc_id '{doc_id}' in KB '{kb.name}' "
                                 f"(GET /v1/kbs/{kb.name}/documents lists them)")
    removed = remove_document(kb, doc_id)  # a file this server stored goes with its document
    return DocumentList(data=removed)


@router.post("/{name}/search", response_model=SearchResponse, responses=ERRORS,
             summary="The most relevant passages, best first")
def search(name: KBName, body: SearchRequest, state: StateDep) -> SearchResponse:
    hits = state.kb(name).search(body.query, body.k, **_filters(body))
    return SearchResponse(hits=hits)


@router.post("/{name}/ask", response_model=AnswerOut, responses={**ERRORS, **MODEL_ERRORS},
             summary="Answer a question from the KB: kb's full Answer with citations and passages")
async def ask(name: KBName, body: AskRequest, request: Request, state: StateDep) -> AnswerOut:
    if not body.question.strip():
        raise HTTPException(400, "the question is empty")
    kb = await run_in_threadpool(state.kb, name)
    history = [(t.question, t.answer) for t in body.history]
    filters = _filters(body)
    pump = Pump(lambda stop: kb.stream(body.question, history=history, answer_mode=body.answer_mode,
                                       backend=StoppableBackend(LazyBackend(state.backend), stop), **filters))
    answer = None
    async for item in pump.items(request):
        answer = item
    if not isinstance(answer, Answer):
        raise HTTPException(499, "the client went away before the answer was complete")
    return AnswerOut(**answer.to_dict())
