"""kb's HTTP API (imported as `kb.server`): OpenAI-compatible chat over a knowledge base, KB management.
It uses kb's public API only."""
