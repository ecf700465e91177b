"""A knowledge base as a langchain-core `BaseRetriever`, for other apps' own chains.

Each hit becomes a `Document` whose metadata holds path, page, section, score, chunk and document
ids. It leaves out async retrieval beyond LangChain's default (a thread around the sync call).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from kb.types import Hit


def to_document(hit: Hit) -> Document:
    return Document(page_content=hit.text, metadata={
        "path": hit.path, "title": hit.title, "page": hit.page, "section": hit.section, "score": hit.score,
        "chunk_id": hit.chunk_id, "doc_id": hit.doc_id, "char_start": hit.char_start, "char_end": hit.char_end,
    })


class KBRetriever(BaseRetriever):
    """Search a KnowledgeBase; `k` and `search` (paths, file_types, doc_ids, mode, rerank) as in kb.retrieval.hybrid."""

    kb: Any
    k: int | None = None
    search: dict[str, Any] = {}
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [to_document(h) for h in self.kb.search(query, self.k, **self.search)]
