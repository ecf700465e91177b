"""Model backends (imported as `kb.llm`): one file per backend behind one small interface."""

from kb.llm.base import ChatBackend, Message, backend_names, load_backend, register_backend

__all__ = ["ChatBackend", "Message", "backend_names", "load_backend", "register_backend"]
