"""What one server process holds: its settings, each knowledge base opened once, the one shared model.

Opening a KB reads its manifest and its vector index, so each KB is opened on first use and kept;
`KnowledgeBase` serializes its own callers. Uploaded files are kept in `$KB_HOME/uploads/<kb>/`, outside
the KB folder, because `kb ingest --rebuild` replaces that folder (and everything in it) with a fresh one.
This module leaves out HTTP: routes turn its errors into responses.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import HTTPException

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import KBNotFoundError
from kb.handle import check_name
from kb.llm.shared import SharedBackend, shared_backend
from kb.uploads import delete_kb, upload_dir


class ServerState:
    """The process-wide objects every request shares."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._kbs: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()

    def backend(self) -> SharedBackend:
        """The process's one chat model (loaded on first use; generations take turns)."""
        return shared_backend(self.settings.llm)

    def kb(self, name: str) -> KnowledgeBase:
        """The named KB, opened once per process; KBNotFoundError if there is none."""
        check_name(name)
        with self._lock:
            kb = self._kbs.get(name)
            if kb is not None and not kb.exists():  # deleted by another process
                self._kbs.pop(name).close()
                kb = None
            if kb is None:
                kb = KnowledgeBase.open(name, settings=self.settings, create=False)
                self._kbs[name] = kb
            return kb

    def names(self) -> list[str]:
        return KnowledgeBase.names(self.settings)

    def create(self, name: str) -> KnowledgeBase:
        check_name(name)
        with self._lock:
            if name in KnowledgeBase.names(self.settings):
                raise HTTPException(409, f"knowledge base '{name}' already exists")
            kb = KnowledgeBase.open(name, settings=self.settings, create=True)
            self._kbs[name] = kb
            return kb

    def delete(self, name: str) -> None:
        """Close and delete the KB and the files uploaded to it."""
        check_name(name)
        with self._lock:
            if name not in KnowledgeBase.names(self.settings):
                raise KBNotFoundError(f"no knowledge base named '{name}'")
            kb = self._kbs.pop(name, None)
            if kb is not None:
                kb.close()
            delete_kb(self.settings, name)

    def uploads(self, name: str) -> Path:
        """The folder that holds the files uploaded to KB `name`."""
        return upload_dir(self.settings, name)

    def close(self) -> None:
        with self._lock:
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()
