"""The Milvus store: knowledge bases in Milvus, shared by every machine and `kb serve` replica pointed at it.

store.uri names the Milvus: a path ending in .db runs Milvus Lite inside this process (the `milvus-lite`
package; one process per file), http://host:19530 a Milvus standalone server or cluster. Everything a KB
is lives there, so a second machine sees the same KB:

    kb_registry                  key -> value: "kb:<name>" -> {build, manifest}; "lease:<name>" -> the writer
    kb_<name>_<hash>_<build>_chunks   one row per chunk version: kb's chunk id, document id and version,
                                 text, place, language, the centred vector (+ its norm before centring),
                                 kb's keyword terms, and Milvus's BM25 sparse vector made from them (split
                                 and Porter-stemmed as SQLite FTS5 does for the local store)
    ..._docs                     one row per document: path, content hash, size, mtime, its current version,
                                 and the sum of its chunks' raw vectors per language (for centring)
    ..._texts                    each document's full text in parts (for neighbour expansion and citations)
    ..._meta                     generation, the embedder's language prior, centrings, pending writes

Commits. Milvus has no transactions, so a document is written as a new *version* beside the old one: its
chunks and text parts first, then its document row, whose upsert is the commit point (readers only see
chunks whose version is the one their document row names), then the old version is deleted. A "pending"
row in meta, written before and deleted after, lets the next writer delete whatever a killed one left.

Centring (kb/centering.py). Stored vectors are already moved into the KB's language-centred space with the
centring recorded under the id in each row, and keep their norm, so the raw vector is exactly
`vector * norm + mean`. `finish()` refits the centring from the documents' running sums and rewrites the
vectors only when a mean moved by more than RECENTRE_AT (the first ingest, or a KB that grew a lot).

Writers. Each KB has a lease in the registry, renewed by a background thread; a second writer gets
LockedError naming the holder. A lease whose holder died is free when it expires, or at once on the holder's
own machine (its process id is gone). Milvus has no compare-and-set, so the lease is written, then read back
after LEASE_SETTLE seconds: of two writers that raced, only the one whose write stands goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kb.centering import Centering, distance, fit_sums
from kb.errors import (
    ConfigError,
    IndexFormatError,
    KBNotFoundError,
    LockedError,
    MissingDependencyError,
    StorageError,
)
from kb.keywords import query_terms
from kb.lang import LANGUAGES, language
from kb.stores import manifest as manifests
from kb.stores.base import CHUNK_FIELDS, DenseQuery, Record, filter_documents
from kb.types import Chunk, DocumentInfo

REGISTRY = "kb_registry"
RECENTRE_AT = 0.02  # rewrite the stored vectors when a language mean moved this far (unit vectors)
REFIT_FROM = 256  # chunks in a KB before a writer refits its centring early (then at every doubling)
LEASE_SETTLE = 0.3  # seconds between writing the lease and reading it back
EXTRA = 16  # more hits asked of Milvus than needed, for versions that are not (or no longer) committed
BATCH = 1000  # rows per insert/upsert/query call
TEXT_PART = 16_000  # characters per stored part of a document's text (at most 48 KB of UTF-8)
VARCHAR_MAX = 65_535
_ANALYZER = {"tokenizer": {"type": "jieba", "mode": "exact"}}  # kb's terms are jieba-segmented already
_BM25 = {"bm25_k1": 1.2, "bm25_b": 0.75}  # SQLite FTS5's bm25() constants, so that both stores rank alike
_WORDS = re.compile(r"\w+")
_ASCII_WORD = re.compile(r"^[a-z]+$")
_stemmers = threading.local()
_CHUNK_OUT = ["chunk_id", "doc_id", "version", "ordinal", "text", "section", "page", "char_start", "char_end"]

_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def _pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise MissingDependencyError("pymilvus", "milvus", "store.backend=milvus") from e
    # kb turns Milvus's errors into its own messages; pymilvus and Milvus Lite would also log each with a
    # traceback (grpc._server: Milvus Lite lacks AllocTimestamp, which query iterators ask for and then do
    # without), and Milvus Lite's analyzer starts jieba, which announces its dictionary
    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        import jieba  # importing it sets its logger to DEBUG, so quieten it after

        jieba.setLogLevel(logging.WARNING)
    except ImportError:
        pass
    return pymilvus


def resolve_uri(uri: str, home: Path) -> str:
    """store.uri as Milvus is given it: a server URL, or a Milvus Lite file made absolute (a relative path is
    taken from the current folder, like every path kb is given; empty is $KB_HOME/milvus.db)."""
    uri = uri.strip() or str(home / "milvus.db")
    if re.match(r"^(https?|tcp|grpc|unix)://", uri):
        return uri
    if not uri.endswith(".db"):
        raise ConfigError(f"store.uri={uri!r} is neither a Milvus server (http://host:19530) nor a Milvus Lite file "
                          "(a path ending in .db); set store.uri (KB_STORE__URI) to one of them")
    path = Path(uri).expanduser()
    return str(path.resolve())


def _lite_holder(path: str) -> bool:
    """Whether another process holds Milvus Lite's lock on this file (flock on <path>/LOCK)."""
    import fcntl

    lock = Path(path) / "LOCK"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def connect(uri: str, token: str = "", db_name: str = "", timeout: float = 10.0):
    """A MilvusClient for this URI (one per process and URI), with a one-line error naming the setting to fix."""
    pymilvus = _pymilvus()
    key = (uri, token, db_name)
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        lite = not re.match(r"^[a-z]+://", uri)
        if lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            if _lite_holder(uri):
                raise StorageError(
                    f"the Milvus Lite file {uri} (store.uri) is open in another process, and Milvus Lite serves one "
                    f"process at a time: stop that process, or serve the file to several with `milvus-lite server "
                    f"--data-dir {uri} --port 19530` and set store.uri=http://127.0.0.1:19530")
        try:
            client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout)
            if db_name:
                if db_name not in client.list_databases():
                    client.create_database(db_name)
                client.use_database(db_name)
            client.list_collections()
        except pymilvus.MilvusException as e:
            raise _connect_error(uri, db_name, e) from e
        except Exception as e:  # grpc and pymilvus raise a few other kinds on a bad address
            raise StorageError(f"cannot reach Milvus at {uri} (store.uri): {_first_line(e)}; check the address, "
                               "that Milvus is running, and the network") from e
        _clients[key] = _Guarded(client, uri)
        return _clients[key]


class _Guarded:
    """A MilvusClient whose failures are kb's StorageError, naming the Milvus and the setting to check, so that a
    Milvus that goes away mid-session gives the CLI, the app and the HTTP API a one-line message."""

    def __init__(self, client, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                if type(e).__module__.split(".")[0] not in ("pymilvus", "grpc"):
                    raise
                raise StorageError(f"Milvus at {self._uri} (store.uri) failed in {name}: {_first_line(e)}") from e

        return call


def disconnect(uri: str) -> None:
    """Close this process's clients of a Milvus (and stop Milvus Lite's server for a .db file, freeing it for
    other processes)."""
    with _clients_lock:
        for key in [k for k in _clients if k[0] == uri]:
            try:
                _clients.pop(key).close()
            except Exception:  # already closed or unreachable: nothing to free
                pass
    if not re.match(r"^[a-z]+://", uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(uri)


def _connect_error(uri: str, db_name: str, e) -> Exception:
    text = _first_line(e)
    low = text.lower()
    if any(w in low for w in ("auth", "credential", "password", "token", "permission", "denied")):
        return StorageError(f"Milvus at {uri} refused the credentials: {text}; set store.token (KB_STORE__TOKEN) to "
                            "'user:password' or an API key")
    if "database" in low and db_name:
        return StorageError(f"Milvus at {uri} has no usable database {db_name!r} (store.db_name): {text}")
    return StorageError(f"cannot reach Milvus at {uri} (store.uri): {text}; check the address, that Milvus is "
                        "running, and the network")


def load(client, collection: str) -> None:
    """Load a collection into memory unless it is: Milvus searches only loaded collections, and a restarted
    server (or Milvus Lite opening its file) starts with all of them released."""
    state = client.get_load_state(collection).get("state")
    if "Loaded" not in str(state):
        client.load_collection(collection)


def _first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:300]


def _q(values: Iterable[Any]) -> str:
    """A Milvus list literal: ["a", "b"] or [1, 2]."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(int(v))
                           for v in values) + "]"


def _pk(*parts: Any) -> int:
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def bm25_text(terms: str) -> str:
    """kb's keyword terms as the local store's FTS5 index sees them: split at punctuation (unicode61) and English
    words Porter-stemmed (snowball's original Porter algorithm, as FTS5's porter tokenizer), so that both stores
    rank by the same terms. Milvus's BM25 function reads this text."""
    stemmer = getattr(_stemmers, "porter", None)
    if stemmer is None:
        import snowballstemmer

        stemmer = _stemmers.porter = snowballstemmer.stemmer("porter")  # not thread-safe: one per thread
    words = _WORDS.findall(terms)
    return " ".join(stemmer.stemWord(w) if _ASCII_WORD.match(w) else w for w in words)


def _cut(text: str, limit: int = VARCHAR_MAX) -> str:
    """Text that fits a VARCHAR of `limit` bytes."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


class MilvusCatalog:
    """Named KBs in one Milvus database: a registry collection plus four collections per KB build."""

    def __init__(self, client, uri: str, db_name: str, lease_seconds: float) -> None:
        self.client = client
        self.uri = uri
        self.db_name = db_name
        self.lease_seconds = lease_seconds
        self.where = f"Milvus {uri}" + (f" (database {db_name})" if db_name else "")
        self._ensure_registry()

    @classmethod
    def connect(cls, settings, home: Path, hnsw_threshold: int = 0) -> MilvusCatalog:
        uri = resolve_uri(settings.uri, home)
        return cls(connect(uri, settings.token, settings.db_name), uri, settings.db_name, settings.lease_seconds)

    # -- the registry ---------------------------------------------------------------------------
    def _ensure_registry(self) -> None:
        pymilvus = _pymilvus()
        if self.client.has_collection(REGISTRY):
            fields = {f["name"] for f in self.client.describe_collection(REGISTRY)["fields"]}
            if not {"key", "value"} <= fields:
                raise IndexFormatError(
                    f"the collection {REGISTRY} in {self.where} is not kb's (fields {sorted(fields)}); point "
                    "store.uri or store.db_name at a database of kb's own")
            load(self.client, REGISTRY)
            return
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", pymilvus.DataType.VARCHAR, max_length=512, is_primary=True)
        schema.add_field("value", pymilvus.DataType.VARCHAR, max_length=VARCHAR_MAX)
        schema.add_field("_v", pymilvus.DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        self._create(REGISTRY, schema, [("_v", "FLAT", "L2")])

    def _create(self, name: str, schema, indexes: list[tuple]) -> None:
        """A collection with (field, index type, metric[, index params]) indexes, loaded, strongly consistent."""
        params = self.client.prepare_index_params()
        for field, kind, metric, *extra in indexes:
            params.add_index(field_name=field, index_type=kind, metric_type=metric, params=extra[0] if extra else {})
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")

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
        build = self._new_build(name, manifest["embedder"]["dim"])
        self._put(f"kb:{name}", {"build": build, "manifest": manifest})

    def open(self, name: str, manifest: dict[str, Any]) -> MilvusStore:
        return MilvusStore(self.client, self._entry(name)["build"], manifest["embedder"]["dim"],
                           f"KB '{name}' in {self.where}", _prefix(name))

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
        return _BuildSwap(self, name, manifest, self._new_build(name, manifest["embedder"]["dim"]))

    def location(self, name: str) -> str:
        entry = self._get(f"kb:{name}")
        build = entry["build"] if entry else "?"
        return f"{self.where}, collections {_prefix(name)}{build}_*"

    def close(self) -> None:
        pass

    # -- builds: the four collections of one KB ---------------------------------------------------
    def _new_build(self, name: str, dim: int) -> str:
        build = uuid.uuid4().hex[:10]
        create_collections(self, _prefix(name) + build, dim)
        return build

    def _drop_builds(self, name: str, keep: str | None) -> None:
        for collection in self.client.list_collections():
            if collection.startswith(_prefix(name)) and (keep is None or not collection.startswith(_prefix(name) + keep)):
                self.client.drop_collection(collection)


def _prefix(name: str) -> str:
    """Collection-name prefix of a KB: Milvus names allow letters, digits and '_' only, so the name is
    simplified and a hash of the real name keeps two KBs apart."""
    return f"kb_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_{hashlib.blake2b(name.encode(), digest_size=3).hexdigest()}_"


class _BuildSwap:
    """A new build of a KB, made the KB by commit() (one registry upsert), the old build then dropped."""

    def __init__(self, catalog: MilvusCatalog, name: str, manifest: dict[str, Any], build: str) -> None:
        self.catalog, self.name, self.manifest, self.build = catalog, name, manifest, build
        self.store = MilvusStore(catalog.client, build, manifest["embedder"]["dim"], f"KB '{name}' in {catalog.where}",
                                 prefix=_prefix(name))

    def commit(self) -> None:
        self.catalog._put(f"kb:{self.name}", {"build": self.build, "manifest": self.manifest})
        self.catalog._drop_builds(self.name, keep=self.build)

    def abort(self) -> None:
        for collection in self.catalog.client.list_collections():
            if collection.startswith(_prefix(self.name) + self.build):
                self.catalog.client.drop_collection(collection)


def create_collections(catalog: MilvusCatalog, prefix: str, dim: int) -> None:
    pymilvus = _pymilvus()
    DataType, Function, FunctionType = pymilvus.DataType, pymilvus.Function, pymilvus.FunctionType
    schema = pymilvus.MilvusClient.create_schema

    chunks = schema(auto_id=False, enable_dynamic_field=False)
    chunks.add_field("pk", DataType.INT64, is_primary=True)
    chunks.add_field("chunk_id", DataType.INT64)
    chunks.add_field("doc_id", DataType.VARCHAR, max_length=64)
    chunks.add_field("version", DataType.INT64)
    chunks.add_field("ordinal", DataType.INT64)
    chunks.add_field("text", DataType.VARCHAR, max_length=VARCHAR_MAX)
    chunks.add_field("section", DataType.VARCHAR, max_length=4096)
    chunks.add_field("page", DataType.INT64, nullable=True)
    chunks.add_field("char_start", DataType.INT64)
    chunks.add_field("char_end", DataType.INT64)
    chunks.add_field("lang", DataType.VARCHAR, max_length=8)
    chunks.add_field("centring", DataType.INT64)
    chunks.add_field("norm", DataType.FLOAT)
    chunks.add_field("terms", DataType.VARCHAR, max_length=VARCHAR_MAX)  # kb's, as given (export, migrate)
    chunks.add_field("bm25_text", DataType.VARCHAR, max_length=VARCHAR_MAX, enable_analyzer=True,
                     analyzer_params=_ANALYZER)
    chunks.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    chunks.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    chunks.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["bm25_text"],
                                 output_field_names=["sparse"]))
    catalog._create(prefix + "_chunks", chunks, [("vector", "AUTOINDEX", "IP"),
                                                 ("sparse", "SPARSE_INVERTED_INDEX", "BM25", _BM25)])

    docs = schema(auto_id=False, enable_dynamic_field=False)
    docs.add_field("doc_id", DataType.VARCHAR, max_length=64, is_primary=True)
    for field, size in (("path", 4096), ("title", 2048), ("file_type", 32), ("content_hash", 128)):
        docs.add_field(field, DataType.VARCHAR, max_length=size)
    for field in ("size", "version", "chunks", "parts"):
        docs.add_field(field, DataType.INT64)
    docs.add_field("mtime", DataType.DOUBLE)
    docs.add_field("ingested_at", DataType.DOUBLE)
    for lang in LANGUAGES:
        docs.add_field(f"n_{lang}", DataType.INT64)
        docs.add_field(f"sum_{lang}", DataType.FLOAT_VECTOR, dim=dim)
    catalog._create(prefix + "_docs", docs, [(f"sum_{lang}", "FLAT", "IP") for lang in LANGUAGES])

    texts = schema(auto_id=False, enable_dynamic_field=False)
    texts.add_field("pk", DataType.INT64, is_primary=True)
    texts.add_field("doc_id", DataType.VARCHAR, max_length=64)
    texts.add_field("version", DataType.INT64)
    texts.add_field("part", DataType.INT64)
    texts.add_field("text", DataType.VARCHAR, max_length=VARCHAR_MAX)
    texts.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    catalog._create(prefix + "_texts", texts, [("_v", "FLAT", "L2")])

    meta = schema(auto_id=False, enable_dynamic_field=False)
    meta.add_field("key", DataType.VARCHAR, max_length=512, is_primary=True)
    meta.add_field("value", DataType.VARCHAR, max_length=VARCHAR_MAX)
    meta.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    catalog._create(prefix + "_meta", meta, [("_v", "FLAT", "L2")])


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


class MilvusStore:
    """One build of one KB in Milvus (kb/stores/base.py's Store)."""

    def __init__(self, client, build: str, dim: int, where: str, prefix: str) -> None:
        self.client = client
        self.dim = dim
        self.where = where
        base = prefix + build
        self.chunks, self.docs, self.texts, self.meta = (f"{base}_{k}" for k in ("chunks", "docs", "texts", "meta"))
        self._check_schema()
        for collection in (self.chunks, self.docs, self.texts, self.meta):
            load(client, collection)
        self._docs: dict[str, dict[str, Any]] | None = None  # doc_id -> row (no sums), for the generation below
        self._docs_generation = -1
        self._checked_at = 0.0
        self._recovered = False
        self._last_version = 0
        self._centrings: dict[int, Centering] = {}

    def _check_schema(self) -> None:
        try:
            fields = {f["name"] for f in self.client.describe_collection(self.chunks)["fields"]}
        except Exception as e:
            raise IndexFormatError(f"{self.where}: collection {self.chunks} cannot be read ({_first_line(e)}); "
                                   "rebuild the KB with `kb ingest PATH --rebuild`") from e
        missing = {"chunk_id", "doc_id", "version", "vector", "sparse", "terms", "bm25_text", "norm", "centring"} - fields
        if missing:
            raise IndexFormatError(f"{self.where}: collection {self.chunks} is not in kb's format (no {sorted(missing)}); "
                                   "rebuild the KB with `kb ingest PATH --rebuild`")

    def close(self) -> None:
        pass  # the client is shared by the process

    # -- meta -------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self.client.query(self.meta, filter=f"key == {json.dumps(key)}", output_fields=["value"])
        return rows[0]["value"] if rows else None

    def _set_meta(self, items: dict[str, str]) -> None:
        if items:
            self.client.upsert(self.meta, [{"key": k, "value": v, "_v": [0.0, 0.0]} for k, v in items.items()])

    def _generation(self) -> int:
        value = self._meta("generation")
        return int(value) if value else 0

    def _bump(self, changed: dict[str, dict[str, Any] | None]) -> None:
        """Count a commit; this writer's own changes (doc_id -> new row, None: removed) update its document list
        in place instead of it being read again (the lease makes this process the only writer)."""
        generation = self._generation() + 1
        self._set_meta({"generation": str(generation)})
        if self._docs is not None and self._docs_generation == generation - 1:
            for doc_id, row in changed.items():
                if row is None:
                    self._docs.pop(doc_id, None)
                else:
                    self._docs[doc_id] = {k: v for k, v in row.items() if k in _DOC_LIST}
            self._docs_generation = generation
        else:
            self._docs = None

    # -- the committed documents ------------------------------------------------------------------
    def _doc_rows(self) -> dict[str, dict[str, Any]]:
        """doc_id -> its committed row, re-read when another writer committed (checked at most once a second)."""
        now = time.monotonic()
        if self._docs is not None and now - self._checked_at < 1.0:
            return self._docs
        generation = self._generation()
        self._checked_at = now
        if self._docs is None or generation != self._docs_generation:
            self._docs = {r["doc_id"]: r for r in self._scan(self.docs, "", _DOC_LIST)}
            self._docs_generation = generation
        return self._docs

    def _scan(self, collection: str, expr: str, fields: list[str], batch: int = BATCH) -> Iterator[dict[str, Any]]:
        it = self.client.query_iterator(collection, batch_size=batch, filter=expr, output_fields=fields)
        try:
            while True:
                rows = it.next()
                if not rows:
                    return
                yield from rows
        finally:
            it.close()

    def _live(self, row: dict[str, Any]) -> bool:
        doc = self._doc_rows().get(row["doc_id"])
        return doc is not None and doc["version"] == row["version"]

    def document_states(self) -> dict[str, tuple[str, int, float, str]]:
        return {r["path"]: (r["content_hash"], r["size"], r["mtime"], r["doc_id"]) for r in self._doc_rows().values()}

    def documents(self) -> list[DocumentInfo]:
        return sorted((DocumentInfo(r["doc_id"], r["path"], r["title"], r["content_hash"], r["size"], r["mtime"],
                                    r["chunks"], r["ingested_at"], r["file_type"]) for r in self._doc_rows().values()),
                      key=lambda d: d.path)

    def document_text(self, doc_id: str) -> str | None:
        doc = self._doc_rows().get(doc_id)
        if doc is None:
            return None
        rows = self.client.query(self.texts, filter=f"doc_id == {json.dumps(doc_id)} and version == {doc['version']}",
                                 output_fields=["part", "text"], limit=max(1, doc["parts"]))
        return "".join(r["text"] for r in sorted(rows, key=lambda r: r["part"]))

    # -- writing ----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Delete what a killed writer left: for each pending document, every version but its committed one."""
        if self._recovered:
            return
        self._recovered = True
        pending = self.client.query(self.meta, filter='key like "pending:%"', output_fields=["key"])
        if not pending:
            return
        self._docs = None
        docs = self._doc_rows()
        for row in pending:
            doc_id = row["key"].split(":")[1]
            keep = docs[doc_id]["version"] if doc_id in docs else -1
            expr = f"doc_id == {json.dumps(doc_id)} and version != {keep}"
            self.client.delete(self.chunks, filter=expr)
            self.client.delete(self.texts, filter=expr)
        self.client.delete(self.meta, filter=f"key in {_q(r['key'] for r in pending)}")

    def _applied(self) -> tuple[int, Centering]:
        """The centring the stored vectors are in (its id), recorded on the first write from the prior."""
        value = self._meta("applied")
        if value is None:
            centring = fit_sums({}, {}, self.language_prior())
            self._set_meta({"centring:1": centring.to_json(), "applied": "1"})
            self._centrings[1] = centring
            return 1, centring
        return int(value), self._centring(int(value))

    def preset_centering(self, centering: Centering) -> None:
        """Store vectors in this centring from the first write on (a copy whose final centring is known: then
        finish() has nothing to rewrite). Only before anything is written."""
        if self._meta("applied") is None and centering.means:
            self._set_meta({"centring:1": centering.to_json(), "applied": "1"})
            self._centrings[1] = centering

    def _centring(self, cid: int) -> Centering:
        if cid not in self._centrings:
            value = self._meta(f"centring:{cid}")
            if value is None:
                raise IndexFormatError(f"{self.where}: centring {cid} is missing from {self.meta}; rebuild the KB "
                                       "with `kb ingest PATH --rebuild`")
            self._centrings[cid] = Centering.from_json(value)
        return self._centrings[cid]

    def put_documents(self, records: list[Record]) -> int:
        """New versions of the documents: chunks and text parts, then each document row (its commit), then
        the old versions deleted. Returns chunks removed."""
        if not records:
            return 0
        self._recover()
        self._refit_early()
        cid, centring = self._applied()
        # every document version is a number no other version of any document has: old ones are deleted by it
        first = max(time.time_ns(), self._last_version + 1)
        versions = {r.info.doc_id: first + i for i, r in enumerate(records)}
        self._last_version = first + len(records)
        found = {r["doc_id"]: r for r in self.client.query(self.docs, filter=f"doc_id in {_q(versions)}",
                                                           output_fields=_DOC_LIST)}
        old = {d: found.get(d) for d in versions}
        pending = [f"pending:{d}:{v}" for d, v in versions.items()]
        self._set_meta(dict.fromkeys(pending, ""))
        chunk_rows, text_rows, doc_rows = [], [], []
        for r in records:
            version = versions[r.info.doc_id]
            langs = [language(c.text) for c in r.chunks]
            raw = np.ascontiguousarray(r.vectors, dtype=np.float32)
            centred, norms = _centre(centring, raw, langs)
            for c, vec, norm, lang, terms in zip(r.chunks, centred, norms, langs, r.terms):
                chunk_rows.append({
                    "pk": _pk(c.chunk_id, version), "chunk_id": c.chunk_id, "doc_id": c.doc_id, "version": version,
                    "ordinal": c.ordinal, "text": _cut(c.text), "section": _cut(c.section, 4096), "page": c.page,
                    "char_start": c.char_start, "char_end": c.char_end, "lang": lang, "centring": cid,
                    "norm": float(norm), "terms": _cut(terms), "bm25_text": _cut(bm25_text(terms)),
                    "vector": vec.tolist()})
            parts = [r.text[i:i + TEXT_PART] for i in range(0, len(r.text), TEXT_PART)] or [""]
            text_rows.extend({"pk": _pk(r.info.doc_id, version, i), "doc_id": r.info.doc_id, "version": version,
                              "part": i, "text": part, "_v": [0.0, 0.0]} for i, part in enumerate(parts))
            row = {"doc_id": r.info.doc_id, "path": _cut(r.info.path, 4096), "title": _cut(r.info.title, 2048),
                   "file_type": r.info.file_type[:32], "content_hash": r.info.content_hash, "size": r.info.size,
                   "mtime": r.info.mtime, "ingested_at": r.info.ingested_at, "version": version,
                   "chunks": len(r.chunks), "parts": len(parts)}
            for lang in LANGUAGES:
                mine = raw[np.asarray(langs) == lang] if len(raw) else raw
                row[f"n_{lang}"] = int(len(mine))
                row[f"sum_{lang}"] = (mine.sum(axis=0) if len(mine) else np.zeros(self.dim)).astype(np.float32).tolist()
            doc_rows.append(row)
        try:
            for start in range(0, len(chunk_rows), BATCH):
                self.client.insert(self.chunks, chunk_rows[start:start + BATCH])
            for start in range(0, len(text_rows), 64):
                self.client.insert(self.texts, text_rows[start:start + 64])
            # a path re-used under another id (should not happen, but never list one file twice)
            paths = _q(r.info.path for r in records)
            stale = [row["doc_id"] for row in self.client.query(self.docs, filter=f"path in {paths}",
                                                                output_fields=["doc_id"]) if row["doc_id"] not in old]
            self.client.upsert(self.docs, doc_rows)  # the commit point of each document
            gone = [row["version"] for row in old.values() if row is not None]
            if gone:
                self.client.delete(self.chunks, filter=f"version in {_q(gone)}")
                self.client.delete(self.texts, filter=f"version in {_q(gone)}")
            if stale:
                self.remove_documents(stale)
            self.client.delete(self.meta, filter=f"key in {_q(pending)}")
            self._bump({row["doc_id"]: row for row in doc_rows})
        except Exception as e:
            raise StorageError(f"cannot write to {self.where} ({_first_line(e)}); the documents written so far are "
                               "kept, and the next `kb ingest` finishes the rest") from e
        return sum(row["chunks"] for row in old.values() if row is not None)

    def touch_document(self, path: str, mtime: float) -> None:
        doc = next((r for r in self._doc_rows().values() if r["path"] == path), None)
        if doc is None:
            return
        full = self.client.query(self.docs, filter=f"doc_id == {json.dumps(doc['doc_id'])}", output_fields=["*"])
        if full:
            row = {k: v for k, v in full[0].items() if k in _DOC_FIELDS}
            row["mtime"] = mtime
            self.client.upsert(self.docs, [row])
            self._bump({row["doc_id"]: row})

    def remove_documents(self, doc_ids: Iterable[str]) -> int:
        """The document rows first (the commit), then their chunks and text parts."""
        ids = [d for d in doc_ids]
        if not ids:
            return 0
        self._recover()
        removed = 0
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            removed += sum(r["chunks"] for r in self.client.query(self.docs, filter=f"doc_id in {_q(part)}",
                                                                  output_fields=["chunks"]))
            self._set_meta({f"pending:{d}:0": "" for d in part})
            self.client.delete(self.docs, filter=f"doc_id in {_q(part)}")
            self.client.delete(self.chunks, filter=f"doc_id in {_q(part)}")
            self.client.delete(self.texts, filter=f"doc_id in {_q(part)}")
            self.client.delete(self.meta, filter=f"key in {_q(f'pending:{d}:0' for d in part)}")
        self._bump(dict.fromkeys(ids))
        return removed

    # -- chunks -----------------------------------------------------------------------------------
    def chunk_count(self) -> int:
        return sum(r["chunks"] for r in self._doc_rows().values())

    def _chunk_rows(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return [r for r in self._scan(self.chunks, expr, fields) if self._live(r)]

    def chunks_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        docs = self._doc_rows()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for r in self.client.query(self.chunks, filter=f"chunk_id in {_q(part)}", output_fields=_CHUNK_OUT):
                if self._live(r):
                    doc = docs[r["doc_id"]]
                    out[r["chunk_id"]] = {f: (doc[f] if f in ("path", "title") else r[f]) for f in CHUNK_FIELDS}
        return out

    def chunk_ids_of(self, doc_ids: list[str]) -> np.ndarray:
        ids: list[int] = []
        for start in range(0, len(doc_ids), 200):
            part = doc_ids[start:start + 200]
            rows = self._chunk_rows(f"doc_id in {_q(part)}", ["chunk_id", "doc_id", "version", "ordinal"])
            ids.extend(r["chunk_id"] for r in sorted(rows, key=lambda r: (r["doc_id"], r["ordinal"])))
        return np.asarray(ids, dtype=np.int64)

    def neighbours(self, doc_id: str, first: int, last: int) -> list[tuple[int, str, int, int, str]]:
        doc = self._doc_rows().get(doc_id)
        if doc is None:
            return []
        rows = self.client.query(
            self.chunks, filter=f"doc_id == {json.dumps(doc_id)} and version == {doc['version']} and "
                                f"ordinal >= {int(first)} and ordinal <= {int(last)}",
            output_fields=["ordinal", "section", "char_start", "char_end", "text"])
        return [(r["ordinal"], r["section"], r["char_start"], r["char_end"], r["text"])
                for r in sorted(rows, key=lambda r: r["ordinal"])]

    def vectors_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = [r for r in self.client.query(self.chunks, filter=f"chunk_id in {_q(part)}",
                                                 output_fields=["chunk_id", "doc_id", "version", "vector", "norm",
                                                                "lang", "centring"]) if self._live(r)]
            out.update(zip((r["chunk_id"] for r in rows), self._raw(rows)))
        return out

    def _raw(self, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        """The embedder's vectors back from stored rows: centred * norm + the row's centring mean."""
        out = []
        for r in rows:
            vec = np.asarray(r["vector"], dtype=np.float32) * np.float32(r["norm"])
            shift = self._centring(r["centring"]).shift(r["lang"]) if self._centring(r["centring"]).means else None
            out.append(vec if shift is None else vec + shift)
        return out

    def matching_documents(self, paths: list[str] | None, file_types: list[str] | None,
                           doc_ids: list[str] | None) -> list[str]:
        rows = ((r["doc_id"], r["path"], r["file_type"]) for r in self._doc_rows().values())
        return filter_documents(rows, paths, file_types, doc_ids)

    # -- the two rankings -------------------------------------------------------------------------
    def _search(self, data, field: str, limit: int, doc_ids: list[str] | None, params: dict) -> list[tuple[int, float]]:
        if doc_ids == []:
            return []
        expr = "" if doc_ids is None else f"doc_id in {_q(doc_ids)}"
        found = self.client.search(self.chunks, data=[data], anns_field=field, limit=limit + EXTRA, filter=expr,
                                   output_fields=["chunk_id", "doc_id", "version"], search_params=params)
        out, seen = [], set()
        for hit in found[0]:
            row = hit["entity"]
            if self._live(row) and row["chunk_id"] not in seen:
                seen.add(row["chunk_id"])
                out.append((int(row["chunk_id"]), float(hit["distance"])))
        return out[:limit]

    def keyword_search(self, query: str, limit: int, doc_ids: list[str] | None = None) -> list[tuple[int, float]]:
        """Milvus's BM25 over kb's terms (the same jieba segmentation as the local store's FTS5 index)."""
        terms = bm25_text(" ".join(query_terms(query)))
        if not terms:
            return []
        hits = self._search(terms, "sparse", limit, doc_ids, {"metric_type": "BM25"})
        # BM25 is never negative; Milvus servers give it as the distance, Milvus Lite 3.2 its negation (best first
        # in both)
        return [(cid, abs(score)) for cid, score in hits]

    def dense_query(self, doc_ids: list[str] | None = None) -> DenseQuery:
        centring = self._applied_for_reading()

        def run(vector: np.ndarray, limit: int, lang: str) -> list[tuple[int, float]]:
            q = centring.query(np.asarray(vector, dtype=np.float32), lang)
            return self._search(q.tolist(), "vector", limit, doc_ids, {"metric_type": "IP"})

        self._doc_rows()  # read here, on the caller's thread
        return run

    def _applied_for_reading(self) -> Centering:
        value = self._meta("applied")
        return self._centring(int(value)) if value is not None else Centering()

    def centering(self) -> Centering:
        counts = {lang: sum(r[f"n_{lang}"] for r in self._doc_rows().values()) for lang in LANGUAGES}
        return Centering(self._applied_for_reading().means, counts)

    # -- language prior and centring --------------------------------------------------------------
    def language_prior(self) -> dict[str, np.ndarray] | None:
        value = self._meta("language_prior")
        if value is None:
            return None
        return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(value).items()}

    def set_language_prior(self, prior: dict[str, np.ndarray]) -> None:
        self._set_meta({"language_prior": json.dumps({k: [round(float(x), 7) for x in v] for k, v in prior.items()})})

    def _fitted(self) -> Centering:
        """The centring the local store would use now, from the documents' running sums."""
        sums = {lang: np.zeros(self.dim, dtype=np.float64) for lang in LANGUAGES}
        counts = {lang: 0 for lang in LANGUAGES}
        for r in self._scan(self.docs, "", ["doc_id"] + [f"{k}_{lang}" for k in ("n", "sum") for lang in LANGUAGES]):
            for lang in LANGUAGES:
                sums[lang] += np.asarray(r[f"sum_{lang}"], dtype=np.float64)
                counts[lang] += r[f"n_{lang}"]
        return fit_sums(sums, counts, self.language_prior())

    def finished(self) -> bool:
        if self.client.query(self.meta, filter='key like "pending:%"', output_fields=["key"], limit=1):
            return False
        value = self._meta("applied")
        return value is None or distance(self._fitted(), self._centring(int(value))) <= RECENTRE_AT

    def finish(self) -> None:
        """Refit the centring and rewrite the stored vectors into it when a mean moved more than RECENTRE_AT;
        then flush, so that the session's rows are in sealed, indexed segments (Milvus Lite otherwise rebuilds
        a BM25 index of its unflushed rows for every search)."""
        self._recover()
        if self._meta("applied") is not None:
            self._recentre()
        for collection in (self.chunks, self.docs, self.texts, self.meta):
            self.client.flush(collection)

    def _refit_early(self) -> None:
        """Refit the centring each time the KB has doubled since the last fit (from REFIT_FROM chunks on), so
        that a first big ingest writes most of its vectors already in the final centring: the means settle
        long before the end, and finish() then has little or nothing to rewrite."""
        if self._meta("applied") is None:
            return
        count = self.chunk_count()
        fitted_at = int(self._meta("fitted_at") or 0)
        if count >= max(2 * fitted_at, REFIT_FROM):
            self._recentre()
            self._set_meta({"fitted_at": str(count)})

    def _recentre(self) -> None:
        cid, applied = self._applied()
        fitted = self._fitted()
        if distance(fitted, applied) <= RECENTRE_AT:
            return
        ids = [int(r["key"].split(":")[1]) for r in self.client.query(self.meta, filter='key like "centring:%"',
                                                                          output_fields=["key"])]
        new = max(ids + [cid]) + 1
        self._set_meta({f"centring:{new}": fitted.to_json()})
        self._centrings[new] = fitted
        fields = _CHUNK_OUT + ["pk", "lang", "centring", "norm", "terms", "bm25_text", "vector"]
        try:
            todo = [r["pk"] for r in self._scan(self.chunks, f"centring != {new}", ["pk"])]
            for start in range(0, len(todo), BATCH):
                rows = self.client.query(self.chunks, filter=f"pk in {_q(todo[start:start + BATCH])}",
                                         output_fields=fields)
                if not rows:
                    continue
                raw = np.stack(self._raw(rows))
                centred, norms = _centre(fitted, raw, [r["lang"] for r in rows])
                for r, vec, norm in zip(rows, centred, norms):
                    r.update(vector=vec.tolist(), norm=float(norm), centring=new)
                self.client.upsert(self.chunks, [{k: r[k] for k in fields} for r in rows])
            self._set_meta({"applied": str(new)})
            self.client.delete(self.meta, filter=f"key like \"centring:%\" and key != \"centring:{new}\"")
            self._centrings = {new: fitted}
            self._bump({})
        except Exception as e:
            raise StorageError(f"cannot rewrite the vectors of {self.where} ({_first_line(e)}); searches still work "
                               "and the next `kb ingest` finishes it") from e

    def disk_bytes(self) -> int | None:
        return None  # Milvus keeps its own storage

    def export(self) -> Iterator[Record]:
        docs = sorted(self._doc_rows().values(), key=lambda r: r["path"])
        fields = _CHUNK_OUT + ["lang", "centring", "norm", "terms", "vector"]
        group: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            group.append(doc)
            if sum(d["chunks"] for d in group) < BATCH * 4 and i + 1 < len(docs):
                continue
            rows = self._chunk_rows(f"doc_id in {_q(d['doc_id'] for d in group)}", fields)
            by_doc: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_doc.setdefault(r["doc_id"], []).append(r)
            for d in group:
                mine = sorted(by_doc.get(d["doc_id"], []), key=lambda r: r["ordinal"])
                chunks = [Chunk(r["chunk_id"], r["doc_id"], r["ordinal"], r["text"], r["section"], r["page"],
                                r["char_start"], r["char_end"]) for r in mine]
                vectors = np.stack(self._raw(mine)) if mine else np.zeros((0, self.dim), dtype=np.float32)
                info = DocumentInfo(d["doc_id"], d["path"], d["title"], d["content_hash"], d["size"], d["mtime"],
                                    len(chunks), d["ingested_at"], d["file_type"])
                yield Record(info, self.document_text(d["doc_id"]) or "", chunks, vectors, [r["terms"] for r in mine])
            group = []


_DOC_LIST = ["doc_id", "path", "title", "file_type", "content_hash", "size", "mtime", "ingested_at", "version", "chunks",
             "parts"] + [f"n_{lang}" for lang in LANGUAGES]  # a document row without its vector sums
_DOC_FIELDS = {"doc_id", "path", "title", "file_type", "content_hash", "size", "version", "chunks", "parts", "mtime",
               "ingested_at"} | {f"{k}_{lang}" for k in ("n", "sum") for lang in LANGUAGES}


def _centre(centring: Centering, raw: np.ndarray, langs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors in the centred space, the norm each had before normalising)."""
    if not len(raw):
        return raw, np.zeros(0, dtype=np.float32)
    if not centring.means:
        return raw.astype(np.float32), np.ones(len(raw), dtype=np.float32)  # unit already: raw = vector * 1
    moved = raw - np.stack([centring.shift(lang) for lang in langs]).astype(np.float32)
    norms = np.maximum(np.linalg.norm(moved, axis=1), 1e-12).astype(np.float32)
    return (moved / norms[:, None]).astype(np.float32), norms
