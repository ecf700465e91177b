"""The data kb passes around: parsed elements, chunks, stored documents and search hits.

All are frozen dataclasses so that a value handed to a caller cannot change under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Element:
    """One block of a parsed document: a heading, paragraph, list item, code block or table."""

    text: str
    kind: str = "text"  # "title", "text", "list", "code", "table"
    page: int | None = None  # 1-based, for formats that have pages (PDF, slides, sheets)
    depth: int = 0  # heading level for titles (0 = top)
    rows: tuple[tuple[str, ...], ...] | None = None  # table cells, first row = header


@dataclass(frozen=True)
class Chunk:
    """A passage of a document as it is embedded and indexed."""

    chunk_id: int  # deterministic: same document text and settings -> same id
    doc_id: str
    ordinal: int  # position within the document
    text: str
    section: str  # heading path, " > " separated ("" before the first heading)
    page: int | None
    char_start: int  # offsets into the document's full text
    char_end: int

    def embedding_text(self, title: str) -> str:
        """What the embedder and the keyword index see: the passage under its headings (or title)."""
        return embedding_text(self.section, title, self.text)


@dataclass(frozen=True)
class DocumentInfo:
    """A document as recorded in a knowledge base."""

    doc_id: str
    path: str
    title: str
    content_hash: str
    size: int
    mtime: float
    chunks: int
    ingested_at: float
    file_type: str


@dataclass(frozen=True)
class DocumentState:
    """What a store holds for a file's current version: how an ingest run tells what changed."""

    content_hash: str
    size: int
    mtime: float
    doc_id: str


@dataclass(frozen=True)
class Hit:
    """One search result. `score` is in [0, 1], higher is more relevant."""

    chunk_id: int
    doc_id: str
    path: str
    title: str
    section: str
    page: int | None
    text: str
    score: float
    char_start: int
    char_end: int
    ranks: dict[str, int] = field(default_factory=dict)  # rank (1-based) in each retriever that found it

    @property
    def location(self) -> str:
        return format_location(self.path, self.page, self.section)


def format_location(path: str, page: int | None, section: str, *, sep: str = ", ", page_label: str = "p. {}") -> str:
    """'file, p. 3, § Section': where a passage is, as every place shows it. `sep` joins the parts (the app's
    cards use " · "), `page_label` writes the page (a Chinese prompt's "第{}页"); an empty path is left out."""
    parts = [path] if path else []
    if page is not None:
        parts.append(page_label.format(page))
    if section:
        parts.append(f"§ {section}")
    return sep.join(parts)


def embedding_text(section: str, title: str, text: str) -> str:
    """Chunk.embedding_text of a stored chunk's columns (the keyword terms are computed again from it)."""
    head = section or title
    return f"{head}\n{text}" if head else text
