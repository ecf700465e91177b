"""The one family of errors kb raises.

The library raises these with messages that name the bad value and the fix; only the CLI, the
Streamlit app and the HTTP server turn them into user-facing output.
"""

from __future__ import annotations


class KBError(Exception):
    """Base class: something the user can fix, described in the message."""


class ConfigError(KBError):
    """A setting is missing or invalid."""


class KBNotFoundError(KBError):
    """The named knowledge base does not exist."""


class KBExistsError(KBError):
    """A knowledge base of that name exists already."""


class UploadRefused(KBError):
    """An uploaded file is refused before it is stored: `status` says why (415: a type kb cannot read,
    413: over server.max_upload_mb, 400: empty or unnamed), the message names the file and the fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class IndexFormatError(KBError):
    """An index on disk is unreadable, tampered with, or from an unknown format version."""


class StorageError(KBError):
    """The index cannot be written (disk full, read-only, I/O error); the last commit is intact."""


class EmbedderMismatchError(KBError):
    """The configured embedding model is not the one the index was built with."""


class LockedError(KBError):
    """Another process holds the knowledge base's write lock."""


class ParseError(KBError):
    """A document could not be parsed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ModelError(KBError):
    """A model could not be loaded or run (missing files, no CUDA, not enough memory)."""


class NoChatModelError(ModelError):
    """No chat model is installed: the embedded default's packages are missing and no other model is set."""


class BusyError(KBError):
    """Too many answers are running or waiting for the model (server.max_queued): `retry_after` is the estimated
    wait in whole seconds, `limit` the bound that was reached."""

    def __init__(self, message: str, retry_after: int, limit: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit


class MissingDependencyError(KBError, ImportError):
    """An optional package is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install 'kb[{extra}]'"
        )
        self.package = package
        self.extra = extra


class PassageNotFoundError(KBError):
    """No passage (chunk) of that id is in the knowledge base: it never was, or its document changed or was removed."""


class EvidenceError(KBError):
    """A passage's page cannot be shown: its original file is encrypted, damaged, or no longer has that page."""


class SourceChangedError(EvidenceError):
    """A passage's original file is missing or its content differs from what was ingested: boxes drawn from it
    would point at the wrong text."""
