"""Reaching a Milvus: store.uri resolved, one client per process and URI, and Milvus's errors as kb's.

`connect` gives a MilvusClient (Milvus Lite in process for a .db path, else a server or cluster) wrapped so
that every failure is a one-line StorageError naming the Milvus and the setting to check; `disconnect` frees
it (and a Milvus Lite file for other processes). pymilvus is imported only here and only when a Milvus is
used: it is an optional dependency (the `milvus` extra). Collections and their rows are schema.py's.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from kb.errors import ConfigError, MissingDependencyError, StorageError

_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def import_pymilvus():
    """pymilvus, quietened; MissingDependencyError naming the `milvus` extra when it is not installed."""
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
    import fcntl  # POSIX only, and needed only for a Milvus Lite file: a server URI works everywhere

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
    pymilvus = import_pymilvus()
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
            raise StorageError(f"cannot reach Milvus at {uri} (store.uri): {first_line(e)}; check the address, "
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
                raise StorageError(f"Milvus at {self._uri} (store.uri) failed in {name}: {first_line(e)}") from e

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
        try:  # milvus-lite is optional (the `milvus` extra); without it there is no Lite server to stop
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(uri)


def _connect_error(uri: str, db_name: str, e) -> Exception:
    text = first_line(e)
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


def first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:300]
