"""Where knowledge bases are kept: `catalog(settings)` gives the configured one (store.backend).

kb/stores/base.py is the interface; local.py (SQLite + FAISS, the default) and milvus.py implement it.
"""

from __future__ import annotations

from kb.config import Settings
from kb.stores.base import Catalog, Record, Store

__all__ = ["Catalog", "Record", "Store", "catalog"]


def catalog(settings: Settings) -> Catalog:
    """The catalog of store.backend: $KB_HOME/kbs, or the Milvus at store.uri."""
    if settings.store.backend == "milvus":
        from kb.stores.milvus import MilvusCatalog

        return MilvusCatalog.connect(settings.store, settings.home_dir, settings.retrieval.hnsw_threshold)
    from kb.stores.local import LocalCatalog

    return LocalCatalog(settings.home_dir / "kbs", settings.retrieval.hnsw_threshold)
