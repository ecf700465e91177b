"""`kb mcp`: the knowledge bases as MCP tools for agents (server/mcp_server.py does the work), over stdio for a
client that starts it, or Streamable HTTP for clients that connect to it. The MCP SDK loads only here."""

from __future__ import annotations

from typing import Annotated

import typer

from kb.cli.options import err
from kb.cli.serve import guard_exposure
from kb.config import load_settings
from kb.errors import ConfigError, MissingDependencyError

DEFAULT_PORT = 8001  # beside kb serve's 8000


def mcp_command(
    kb: Annotated[str | None, typer.Option(
        "--kb", help="Serve only this knowledge base (default: every KB in KB_HOME).")] = None,
    http: Annotated[bool, typer.Option(
        "--http", help="Serve Streamable HTTP on --host/--port (endpoint /mcp) instead of stdio.")] = False,
    host: Annotated[str | None, typer.Option(
        help="With --http: address to listen on (default: server.host, 127.0.0.1). Any other address than "
        "loopback needs server.api_key, or --no-key.")] = None,
    port: Annotated[int, typer.Option(help="With --http: port.")] = DEFAULT_PORT,
    allow_write: Annotated[bool, typer.Option(
        "--allow-write", help="Offer the ingest tool (add files and folders of this machine to a KB). Without it "
        "the server is read-only and ingest is not listed.")] = False,
    no_key: Annotated[bool, typer.Option(
        "--no-key", help="With --http on a non-loopback address: serve without server.api_key, to anyone who can "
        "reach this machine.")] = False,
) -> None:
    """Serve your knowledge bases to AI agents over MCP (Claude Desktop, Claude Code, Cursor...).

    Tools: list_knowledge_bases, search, ask (a cited answer), read_passage; ingest with --allow-write.

    By default it serves every KB over stdio: the client starts `kb mcp` itself. The README has client configurations to paste.

    With --http it serves http://HOST:PORT/mcp under the API-key rule of `kb serve` (Authorization: Bearer <server.api_key>).
    """
    settings = load_settings()
    try:
        from kb.server import mcp_server
    except ImportError as e:
        missing = e.name if e.name and not e.name.startswith("kb") else "mcp"
        raise MissingDependencyError(missing, "mcp", "The MCP server (kb mcp)") from e
    from kb.knowledge_base import KnowledgeBase

    if kb is not None and kb not in KnowledgeBase.names(settings):
        known = ", ".join(KnowledgeBase.names(settings)) or "none yet: create one with `kb ingest FOLDER --kb NAME`"
        raise ConfigError(f"no knowledge base named '{kb}' to serve (knowledge bases: {known})")
    if not http:
        if host is not None or no_key:
            err.print("note: --host and --no-key apply to --http only; serving stdio", highlight=False)
        mcp_server.run_stdio(settings, only=kb, allow_write=allow_write)
        return
    host = host or settings.server.host
    guard_exposure(host, settings, no_key, "kb mcp --http")
    mcp_server.run_http(settings, host, port, only=kb, allow_write=allow_write)


def register(app: typer.Typer) -> None:
    """Add mcp to `app`."""
    app.command("mcp")(mcp_command)
