"""The local catalog: knowledge bases as folders under $KB_HOME/kbs, with a writer lock file beside each.

`LocalCatalog` creates, lists, opens and deletes KB folders (a KB is a folder with a manifest.json);
`_WriteLock` is a KB's writer lock (<kbs>/<name>.lock, a FileLock); `_FolderSwap` writes a rebuild or a
migration into a hidden folder and swaps it in by two renames, and `_recover_swap` finishes or undoes a swap
that a crash interrupted. What is inside a folder is LocalStore's (store.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kb.errors import KBNotFoundError, LockedError
from kb.stores import manifest as manifests
from kb.stores.local.store import LocalStore


class LocalCatalog:
    """Knowledge bases as folders under $KB_HOME/kbs, each with a writer lock file beside it.

    A replacement (rebuild, migrate) is written into a hidden folder beside the KB and swapped in by two
    renames at the end; a crash between them is finished or undone the next time the KB is opened."""

    def __init__(self, root: Path, hnsw_threshold: int = 200_000, keyword_engine: str = "tantivy") -> None:
        self.root = root
        self.where = str(root)
        self.hnsw_threshold = hnsw_threshold
        self.keyword_engine = keyword_engine

    def folder(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "manifest.json").exists() and not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        _recover_swap(self.folder(name))
        return (self.folder(name) / "manifest.json").exists()

    def manifest(self, name: str) -> dict[str, Any]:
        if not self.exists(name):
            raise KBNotFoundError(f"no knowledge base named '{name}' in {self.root}")
        return manifests.read(self.folder(name))

    def create(self, name: str, manifest: dict[str, Any]) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        manifests.write_json_atomic(folder / "manifest.json", manifest)

    def open(self, name: str, manifest: dict[str, Any]) -> LocalStore:
        return LocalStore(self.folder(name), manifest["embedder"]["dim"], self.hnsw_threshold,
                          manifests.ensemble_dims(manifest), self.keyword_engine)

    def delete(self, name: str) -> None:
        folder = self.folder(name)
        if not folder.exists():
            raise KBNotFoundError(f"no knowledge base named '{name}'")
        with self.writer(name, 0):
            shutil.rmtree(folder)

    def writer(self, name: str, wait: float) -> _WriteLock:
        return _WriteLock(self.folder(name), wait)

    def stamp(self, name: str) -> int | None:
        """The inode of the KB's database: a rebuild swaps folders, so it changes."""
        for _ in range(20):  # another process may be between its two renames right now
            try:
                return (self.folder(name) / "meta.sqlite").stat().st_ino
            except FileNotFoundError:
                time.sleep(0.05)
        return None

    def replacement(self, name: str, manifest: dict[str, Any]) -> _FolderSwap:
        return _FolderSwap(self, name, manifest)

    def location(self, name: str) -> str:
        return str(self.folder(name))

    def close(self) -> None:
        pass


class _FolderSwap:
    """A fresh KB folder beside the old one, swapped in by commit()."""

    def __init__(self, catalog: LocalCatalog, name: str, manifest: dict[str, Any]) -> None:
        self.target = catalog.folder(name)
        self.fresh = self.target.with_name(f".{name}.rebuild")
        shutil.rmtree(self.fresh, ignore_errors=True)
        self.fresh.mkdir(parents=True)
        manifests.write_json_atomic(self.fresh / "manifest.json", manifest)
        self.store = LocalStore(self.fresh, manifest["embedder"]["dim"], catalog.hnsw_threshold,
                                manifests.ensemble_dims(manifest), catalog.keyword_engine)

    def commit(self) -> None:
        self.store.close()
        old = self.target.with_name(f".{self.target.name}.old")
        if self.target.exists():
            self.target.rename(old)
        self.fresh.rename(self.target)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        self.store.close()
        shutil.rmtree(self.fresh, ignore_errors=True)


def _recover_swap(folder: Path) -> None:
    """Finish or undo a replacement's folder swap that a crash interrupted."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        if not folder.exists():
            old.rename(folder)
        else:
            shutil.rmtree(old, ignore_errors=True)


class _WriteLock:
    """A KB folder's writer lock; `wait` seconds before giving up with a clear message."""

    def __init__(self, folder: Path, wait: float) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(folder.with_name(folder.name + ".lock")))
        self._folder = folder
        self._wait = wait

    def __enter__(self) -> None:
        try:
            self._lock.acquire(timeout=self._wait)
        except Timeout as e:
            raise LockedError(
                f"knowledge base '{self._folder.name}' is being written by another process (lock "
                f"{self._lock.lock_file}); wait for it to finish, or pass --wait SECONDS"
            ) from e

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
