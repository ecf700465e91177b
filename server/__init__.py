"""kb's HTTP API (imported as `kb.server`): OpenAI-compatible chat over a knowledge base, KB management.
It uses kb's public API only."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
