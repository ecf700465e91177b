"""One open knowledge base's place in its catalog: its name, manifest and store, and the embedder it was built with.

A KB lives in a catalog (kb/stores): by default `$KB_HOME/kbs/<name>/`, or a Milvus database (store.backend:
milvus). A `Handle` keeps the KB's store open and reopens it when another process rebuilt (swapped) or deleted
the KB, so a long-running server or app never answers from a replaced index. Writers take the catalog's writer
lock (`writer`); a rebuild writes a fresh store beside the old one and swaps it in at the end (`replace`).
This module leaves out what is done with the store: ingest (kb/writing.py) and search (kb/retrieval/retriever.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from kb.config import KB_NAME_PATTERN, Settings
from kb.errors import ConfigError, EmbedderMismatchError, KBNotFoundError, ModelError
from kb.ingest.embed import Embedder, get_embedder
from kb.stores import Catalog, Store
from kb.stores import manifest as manifests

STAMP_EVERY = 1.0  # seconds between checks that another process rebuilt or deleted a Milvus KB

_NAME = re.compile(KB_NAME_PATTERN)
T = TypeVar("T")


def check_name(name: str) -> str:
    """The name, if it is a valid KB name (ConfigError naming the rule otherwise)."""
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def kb_names(place: Catalog) -> list[str]:
    """The KBs in a catalog (anything else its folder holds is left out)."""
    return [n for n in place.names() if _NAME.match(n)]


def new_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest of a new KB: the configured embedder (loaded once to learn its size) and chunking."""
    embedder = get_embedder(settings.embedding, settings.models_dir)
    limit = embedder.max_seq_length - 16
    if settings.chunking.max_tokens > limit:
        raise ConfigError(f"chunking.max_tokens={settings.chunking.max_tokens} exceeds what embedding model "
                          f"'{embedder.model_id}' reads ({embedder.max_seq_length} tokens); use at most {limit}")
    return manifests.new(embedder, settings.chunking.model_dump(), configured_ensemble(settings))


def configured_ensemble(settings: Settings) -> list[Embedder]:
    """The embedders the settings name besides the main one (loaded; shared per process)."""
    return [get_embedder(_alone(settings, name), settings.models_dir) for name in settings.embedding.ensemble]


def _alone(settings: Settings, name: str, entry: dict[str, Any] | None = None):
    """Embedding settings for one member of an ensemble: its own model and prefixes (the manifest's, if given)."""
    update: dict[str, Any] = {"model": name, "models": [name], "query_prefix": None, "passage_prefix": None}
    if entry is not None:
        update.update(query_prefix=entry.get("query_prefix", ""), passage_prefix=entry.get("passage_prefix", ""))
    return settings.embedding.model_copy(update=update)


class Handle:
    """An open KB: `store()` is always the KB's current store; `lock` serializes this process's callers."""

    def __init__(self, name: str, place: Catalog, settings: Settings) -> None:
        self.name = name
        self.catalog = place
        self.settings = settings
        self.lock = threading.RLock()  # one store connection, shared by this object's callers
        self._open()

    def _open(self) -> None:
        self.manifest = self.catalog.manifest(self.name)
        self._opened = self.catalog.open(self.name, self.manifest)
        self._opened_stamp = self.catalog.stamp(self.name)
        self._stamped_at = time.monotonic()

    def store(self) -> Store:
        """The open store; reopened first when another process rebuilt (swapped) the KB."""
        with self.lock:
            if time.monotonic() - self._stamped_at < STAMP_EVERY and self.settings.store.backend != "local":
                return self._opened
            stamp = self.catalog.stamp(self.name)
            self._stamped_at = time.monotonic()
            if stamp is None:
                raise KBNotFoundError(f"knowledge base '{self.name}' is gone ({self.catalog.location(self.name)} "
                                      "was deleted)")
            if stamp != self._opened_stamp:
                self._opened.close()
                self._open()
            return self._opened

    def writer(self, wait: float) -> AbstractContextManager[None]:
        """The KB's writer lock (LockedError naming the holder; `wait` seconds for it first)."""
        return self.catalog.writer(self.name, wait)

    def replace(self, fill: Callable[[Store], T]) -> T:
        """Fill a fresh store (the current settings' embedder and chunking) and swap it in for the KB's.

        Until the swap, readers keep the old store; if `fill` fails, the fresh one is dropped. Hold `writer`."""
        fresh = self.catalog.replacement(self.name, new_manifest(self.settings))
        try:
            result = fill(fresh.store)
            fresh.store.finish()
        except BaseException:
            fresh.abort()
            raise
        self._opened.close()
        fresh.commit()
        self._open()
        return result

    def exists(self) -> bool:
        return self.catalog.exists(self.name)

    @property
    def location(self) -> str:
        return self.catalog.location(self.name)

    def close(self) -> None:
        self._opened.close()

    def embedder(self) -> Embedder:
        """The embedding model this KB was built with (loaded on first use, shared per process).

        The manifest pins it: a KB built with all-MiniLM-L6-v2 keeps searching with it after kb's default
        changed. Only a model named explicitly in the settings that differs from the KB's is an error."""
        built = self.manifest["embedder"]
        want = self.settings.embedding
        mine = manifests.pinned(built)
        if manifests.embedder_mismatch(built, want):
            raise EmbedderMismatchError(
                f"embedding model '{want.model}' (prefixes {want.query_prefix!r}/{want.passage_prefix!r}) does "
                f"not match the index of KB '{self.name}' (built with '{built['model']}', prefixes "
                f"{mine['query_prefix']!r}/{mine['passage_prefix']!r}); run `kb ingest PATH --kb {self.name} "
                f"--rebuild` to re-embed it with the configured model, or remove embedding.model from your "
                "settings to keep the KB's own"
            )
        try:
            return get_embedder(want.model_copy(update=mine), self.settings.models_dir)
        except ModelError as e:
            if built["model"] == want.model:
                raise
            raise EmbedderMismatchError(
                f"KB '{self.name}' was built with embedding model '{built['model']}', which cannot be loaded "
                f"here ({e}); make that model available, or run `kb ingest PATH --kb {self.name} --rebuild` "
                f"to re-embed the KB with '{want.model}'"
            ) from e

    def ensemble(self) -> list[Embedder]:
        """The KB's other embedders, as its manifest pins them (none for a KB of one embedder). Unlike the main
        one, configuring another set is no error: the KB keeps its own until `kb ingest --rebuild`."""
        out = []
        for entry in self.manifest.get("ensemble", []):
            try:
                out.append(get_embedder(_alone(self.settings, entry["model"], entry), self.settings.models_dir))
            except ModelError as e:
                raise EmbedderMismatchError(
                    f"KB '{self.name}' was built with embedding model '{entry['model']}' beside "
                    f"'{self.manifest['embedder']['model']}', and it cannot be loaded here ({e}); make it "
                    f"available, or run `kb ingest PATH --kb {self.name} --rebuild` to re-embed the KB with "
                    f"embedding.models {self.settings.embedding.models}") from e
        return out

    def configured_ensemble(self) -> list[Embedder]:
        """The other embedders the settings name (what a rebuild embeds with)."""
        return configured_ensemble(self.settings)

    def configured_embedder(self) -> Embedder:
        """The embedder the settings name (what a rebuild embeds with)."""
        return get_embedder(self.settings.embedding, self.settings.models_dir)
