"""Where knowledge bases are kept: `catalog(settings)` gives the configured one (store.backend).

kb/stores/base.py is the interface; kb/stores/local/ (SQLite + FAISS, the default) and kb/stores/milvus/
implement it.
"""

from __future__ import annotations

from kb.config import Settings
from kb.stores.base import Catalog, Record, SideVectors, Store

__all__ = ["Catalog", "Record", "SideVectors", "Store", "catalog"]


def catalog(settings: Settings) -> Catalog:
    """The catalog of store.backend: $KB_HOME/kbs, or the Milvus at store.uri."""
    # Only the chosen backend is imported (a factory, as for models): the Milvus store needs the optional
    # `milvus` extra, and the local store (filelock, SQLite, FAISS files) is not loaded for a Milvus set-up.
    if settings.store.backend == "milvus":
        from kb.stores.milvus import MilvusCatalog

        return MilvusCatalog.connect(settings.store, settings.home_dir, settings.retrieval.hnsw_threshold)
    from kb.stores.local import LocalCatalog

    return LocalCatalog(settings.home_dir / "kbs", settings.retrieval.hnsw_threshold, settings.store.keyword_engine)
