"""kb's network faces (imported as `kb.server`): the HTTP API (app.py: OpenAI-compatible chat over a knowledge
base, KB management) and the MCP server (mcp_server.py: knowledge bases as tools for agents).

Both work through the answer service (kb/answer/service.py) and share the API-key rule (keys.py). Nothing is
imported here, so that `kb mcp` does not load FastAPI and `kb serve` does not load the MCP SDK."""
