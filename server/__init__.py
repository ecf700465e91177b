"""kb's HTTP API (imported as `kb.server`): OpenAI-compatible chat over a knowledge base, KB management.

It works through `KnowledgeBase`, the settings, and what it shares with the web app: uploads and deleting KBs
and documents (kb/uploads.py), the process-wide model (llm/shared.py) and the lazy model handle
(kb/answer/loading.py)."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
