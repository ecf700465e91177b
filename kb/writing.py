"""Writing a knowledge base: ingest files and folders into it, rebuild it, remove documents from it.

Every write holds the KB's writer lock (kb/handle.py), so two processes never write one KB at once; readers
need no lock and always see the last commit. A rebuild fills a fresh store with the configured embedder and
chunking, and swaps it in at the end, so the old index stays usable until the new one is complete. This module
leaves out how a file becomes chunks and vectors (ingest/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kb.errors import ConfigError, KBError
from kb.handle import Handle
from kb.ingest.embed import Embedder
from kb.ingest.loaders import Limits
from kb.ingest.ocr import OcrOptions
from kb.ingest.report import IngestReport
from kb.retrieval import glossary
from kb.stores import Store
from kb.stores.centring import reference_means
from kb.types import DocumentInfo


def ingest(handle: Handle, roots: list[Path], *, prune: bool = False, rebuild: bool = False, wait: float = 0,
           progress: Callable[[Any], None] | None = None) -> IngestReport:
    """Add or update the documents under `roots` (embedded by the KB's own embedders); with `rebuild`, re-embed
    the whole KB with the settings' embedders and chunking (the documents it holds whose files still exist, and
    `roots`)."""
    # The pipeline pulls in the parsers (pypdfium2, the OCR engines): only a command that ingests pays for them.
    from kb.ingest.pipeline import run_ingest

    if not roots:
        raise KBError("nothing to ingest: give at least one file or folder")
    settings = handle.settings
    limits, ocr = Limits.from_settings(settings.ingest), OcrOptions.from_settings(settings.ingest)
    with handle.lock, handle.writer(wait):
        if rebuild:
            keep = [] if prune else [Path(d.path) for d in handle.store().documents() if Path(d.path).exists()]

            def fill(fresh: Store) -> IngestReport:
                _record_language_prior(fresh, handle.configured_embedder)
                return run_ingest(fresh, handle.configured_embedder, roots + keep,
                                  max_tokens=settings.chunking.max_tokens,
                                  overlap_tokens=settings.chunking.overlap_tokens, prune=False, progress=progress,
                                  limits=limits, ocr=ocr, ensemble=handle.configured_ensemble)
            report = handle.replace(fill)
        else:
            _check_chunking(handle)
            chunking = handle.manifest["chunking"]
            store = handle.store()
            _record_language_prior(store, handle.embedder)
            report = run_ingest(store, handle.embedder, roots, max_tokens=chunking["max_tokens"],
                                overlap_tokens=chunking["overlap_tokens"], prune=prune, progress=progress,
                                limits=limits, ocr=ocr, ensemble=handle.ensemble)
        _prepare_dictionary(handle)
        return report


def remove(handle: Handle, target: str | Path, wait: float = 0) -> list[DocumentInfo]:
    """Remove a document by path or id, or every document under a folder. Returns what was removed."""
    key = str(target)
    resolved = str(Path(key).expanduser().resolve())
    with handle.lock, handle.writer(wait):
        store = handle.store()
        chosen = [d for d in store.documents() if d.doc_id == key or d.path == resolved
                  or d.path.startswith(resolved.rstrip("/") + "/")]
        if not chosen:
            raise KBError(f"'{key}' is not a document in KB '{handle.name}' (see `kb list --kb {handle.name}`)")
        store.remove_documents(d.doc_id for d in chosen)
        store.finish()
    return chosen


def _check_chunking(handle: Handle) -> None:
    built = handle.manifest["chunking"]
    want = handle.settings.chunking.model_dump()
    if built != want:
        raise ConfigError(
            f"chunking settings {want} differ from those KB '{handle.name}' was built with {built}; "
            f"run `kb ingest PATH --kb {handle.name} --rebuild` to re-chunk everything"
        )


def _prepare_dictionary(handle: Handle) -> None:
    """Build the dictionary's lookup (kb/retrieval/glossary.py; about 6 s, once per models folder) now, when the KB holds
    both languages, rather than in the first question's search."""
    counts = handle.store().centering().counts
    if counts.get("en") and counts.get("zh"):
        glossary.load(handle.settings.models_dir)


def _record_language_prior(store: Store, embedder: Callable[[], Embedder]) -> None:
    """Embed kb's generic reference sentences once per KB (a few seconds) for language centring."""
    if store.language_prior() is None:
        store.set_language_prior(reference_means(embedder().encode))  # the ingest saves the refitted index
