"""The Milvus catalog: named KBs in one Milvus database, and the writer lease of each.

`MilvusCatalog` keeps the registry ("kb:<name>" -> {build, manifest}) and the builds (four collections per
KB, and one per other embedder of its ensemble: schema.py); `_BuildSwap` makes a rebuild or migration the KB
with one registry upsert. `Lease` is a KB's writer lock: written to the registry ("lease:<name>"), read back
after LEASE_SETTLE seconds (Milvus has no compare-and-set), renewed by a background thread, free when it
expires or at once when its holder's process on this machine is gone. What is inside a build is
MilvusStore's (store.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kb.errors import KBNotFoundError, LockedError
from kb.stores import manifest as manifests
from kb.stores.milvus.client import connect, resolve_uri
from kb.stores.milvus.schema import REGISTRY, create_collections, ensure_registry
from kb.stores.milvus.store import MilvusStore

LEASE_SETTLE = 0.3  # seconds between writing the lease and reading it back


class MilvusCatalog:
    """Named KBs in one Milvus database: a registry collection plus four collections per KB build (and a side
    collection per other embedder of a KB's ensemble)."""

    def __init__(self, client, uri: str, db_name: str, lease_seconds: float) -> None:
        self.client = client
        self.uri = uri
        self.db_name = db_name
        self.lease_seconds = lease_seconds
        self.where = f"Milvus {uri}" + (f" (database {db_name})" if db_name else "")
        ensure_registry(client, self.where)

    @classmethod
    def connect(cls, settings, home: Path, hnsw_threshold: int = 0) -> MilvusCatalog:
        uri = resolve_uri(settings.uri, home)
        return cls(connect(uri, settings.token, settings.db_name), uri, settings.db_name, settings.lease_seconds)

    # -- the registry ---------------------------------------------------------------------------
    def _get(self, key: str) -> dict[str, Any] | None:
        rows = self.client.query(REGISTRY, filter=f"key == {json.dumps(key)}", output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def _put(self, key: str, value: dict[str, Any]) -> None:
        self.client.upsert(REGISTRY, [{"key": key, "value": json.dumps(value, ensure_ascii=False), "_v": [0.0, 0.0]}])

    def _drop_key(self, key: str) -> None:
        self.client.delete(REGISTRY, filter=f"key == {json.dumps(key)}")

    # -- the catalog ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        rows = self.client.query(REGISTRY, filter='key like "kb:%"', output_fields=["key"])
        return sorted(r["key"][3:] for r in rows)

    def exists(self, name: str) -> bool:
        return self._get(f"kb:{name}") is not None

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self._get(f"kb:{name}")
        if entry is None:
            raise KBNotFoundError(f"no knowledge base named '{name}' in {self.where}")
        return entry

    def manifest(self, name: str) -> dict[str, Any]:
        return manifests.check(self._entry(name).get("manifest"), f"the manifest of KB '{name}' in {self.where}")

    def create(self, name: str, manifest: dict[str, Any]) -> None:
        self._drop_builds(name, keep=None)  # collections of a creation that was killed before registering
        build = self._new_build(name, manifest)
        self._put(f"kb:{name}", {"build": build, "manifest": manifest})

    def open(self, name: str, manifest: dict[str, Any]) -> MilvusStore:
        return MilvusStore(self.client, self._entry(name)["build"], manifest["embedder"]["dim"],
                           f"KB '{name}' in {self.where}", collection_prefix(name), manifests.ensemble_dims(manifest))

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise KBNotFoundError(f"no knowledge base named '{name}' in {self.where}")
        with self.writer(name, 0):
            self._drop_key(f"kb:{name}")
            self._drop_builds(name, keep=None)

    def writer(self, name: str, wait: float) -> Lease:
        return Lease(self, name, wait)

    def stamp(self, name: str) -> str | None:
        entry = self._get(f"kb:{name}")
        return None if entry is None else entry["build"]

    def replacement(self, name: str, manifest: dict[str, Any]) -> _BuildSwap:
        current = self.stamp(name)
        self._drop_builds(name, keep=current)  # leftovers of a rebuild or migration that was killed
        return _BuildSwap(self, name, manifest, self._new_build(name, manifest))

    def location(self, name: str) -> str:
        entry = self._get(f"kb:{name}")
        build = entry["build"] if entry else "?"
        return f"{self.where}, collections {collection_prefix(name)}{build}_*"

    def close(self) -> None:
        pass

    # -- builds: the four collections of one KB (and one per other embedder of its ensemble) ---------
    def _new_build(self, name: str, manifest: dict[str, Any]) -> str:
        build = uuid.uuid4().hex[:10]
        create_collections(self.client, collection_prefix(name) + build, manifest["embedder"]["dim"],
                           manifests.ensemble_dims(manifest))
        return build

    def _drop_builds(self, name: str, keep: str | None) -> None:
        start = collection_prefix(name)
        for collection in self.client.list_collections():
            if collection.startswith(start) and (keep is None or not collection.startswith(start + keep)):
                self.client.drop_collection(collection)


def collection_prefix(name: str) -> str:
    """Collection-name prefix of a KB: Milvus names allow letters, digits and '_' only, so the name is
    simplified and a hash of the real name keeps two KBs apart."""
    return f"kb_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_{hashlib.blake2b(name.encode(), digest_size=3).hexdigest()}_"


class _BuildSwap:
    """A new build of a KB, made the KB by commit() (one registry upsert), the old build then dropped."""

    def __init__(self, catalog: MilvusCatalog, name: str, manifest: dict[str, Any], build: str) -> None:
        self.catalog, self.name, self.manifest, self.build = catalog, name, manifest, build
        self.store = MilvusStore(catalog.client, build, manifest["embedder"]["dim"], f"KB '{name}' in {catalog.where}",
                                 prefix=collection_prefix(name), ensemble=manifests.ensemble_dims(manifest))

    def commit(self) -> None:
        self.catalog._put(f"kb:{self.name}", {"build": self.build, "manifest": self.manifest})
        self.catalog._drop_builds(self.name, keep=self.build)

    def abort(self) -> None:
        for collection in self.catalog.client.list_collections():
            if collection.startswith(collection_prefix(self.name) + self.build):
                self.catalog.client.drop_collection(collection)


class Lease:
    """A KB's writer lease in the registry: taken on enter (waiting up to `wait` seconds), renewed in the
    background, given back on exit. A holder that died stops holding it lease_seconds after its last renewal."""

    def __init__(self, catalog: MilvusCatalog, name: str, wait: float) -> None:
        self.catalog, self.name, self.wait = catalog, name, wait
        self.key = f"lease:{name}"
        self.owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _mine(self, row: dict[str, Any] | None) -> bool:
        return row is not None and row.get("id") == self.owner["id"]

    def _write(self) -> None:
        self.catalog._put(self.key, {**self.owner, "expires": time.time() + self.catalog.lease_seconds})

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.wait
        while True:
            row = self.catalog._get(self.key)
            if row is None or row.get("expires", 0) < time.time() or _dead_here(row):
                self._write()
                time.sleep(LEASE_SETTLE)
                if self._mine(self.catalog._get(self.key)):
                    break
                continue  # another writer's lease stands: wait for it like any other
            if time.monotonic() >= deadline:
                left = max(0, int(row["expires"] - time.time()))
                raise LockedError(
                    f"knowledge base '{self.name}' in {self.catalog.where} is being written by process {row.get('pid')} "
                    f"on {row.get('host')} (its lease runs {left} s more unless renewed); wait for it to finish, or "
                    "pass --wait SECONDS")
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._renew, name=f"kb-lease-{self.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.catalog.lease_seconds / 3):
            try:
                self._write()
            except Exception:  # a dropped connection: the next renewal tries again
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._mine(self.catalog._get(self.key)):
                self.catalog._drop_key(self.key)
        except Exception:  # the lease then simply expires
            pass


def _dead_here(row: dict[str, Any]) -> bool:
    """Whether a lease's holder is a process on this machine that no longer runs (killed: its lease is free
    now rather than when it expires)."""
    if row.get("host") != socket.gethostname() or not isinstance(row.get("pid"), int):
        return False
    try:
        os.kill(row["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
