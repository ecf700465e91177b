"""`kb serve` (the HTTP API) and `kb app` (the Streamlit web app): long-running faces over the same KBs
(registered in kb/cli.py). Both only start a server; kb.server and kb.app do the work, and are imported
only here, so the rest of the CLI never loads FastAPI or Streamlit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kb.config import Settings, load_settings
from kb.errors import MissingDependencyError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


HostOpt = Annotated[str | None, typer.Option(help="Address to listen on (default: server.host, 127.0.0.1). "
                                             "0.0.0.0 exposes your documents to the network.")]


def _warn_if_exposed(host: str, settings: Settings) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.server.api_key:
        err.print(f"[yellow]warning:[/yellow] listening on {host} with no API key: anyone who can reach this "
                  "machine can read and change your knowledge bases. Set server.api_key (KB_SERVER__API_KEY).",
                  highlight=False, soft_wrap=True)


def serve_command(
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 8000).")] = None,
) -> None:
    """Start the HTTP API: OpenAI-compatible chat over your KBs (model "kb:<name>"), KB management.

    The interactive API docs are at http://HOST:PORT/docs. With server.api_key set, every route but
    /health needs `Authorization: Bearer <key>`.
    """
    settings = load_settings()
    host = host or settings.server.host
    _warn_if_exposed(host, settings)
    try:
        from kb.server import serve as run_server
    except ImportError as e:
        missing = e.name if e.name and not e.name.startswith("kb") else "fastapi"
        raise MissingDependencyError(missing, "server", "The HTTP API (kb serve)") from e
    run_server(settings, host=host, port=port or settings.server.port)


def app_command(
    host: HostOpt = None,
    port: Annotated[int, typer.Option(help="Port of the web app.")] = 8501,
    browser: Annotated[bool, typer.Option(help="Open a browser tab.")] = True,
) -> None:
    """Start the Streamlit document Q&A app (chat with sources, knowledge bases, settings)."""
    import importlib.util
    import math
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError("streamlit", "app", "The web app (kb app)")
    import kb.app

    settings = load_settings()
    host = host or settings.server.host
    _warn_if_exposed(host, settings)
    script = Path(kb.app.__file__).parent / "main.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", host,
           "--server.port", str(port), "--server.headless", str(not browser).lower(),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
           # Streamlit's uploader then shows (and enforces) kb's own limit instead of its 200 MB default.
           "--server.maxUploadSize", str(max(1, math.ceil(settings.server.max_upload_mb)))]
    out.print(f"kb app on http://{host}:{port} (Ctrl+C stops it)", highlight=False)
    sys.stdout.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)  # Streamlit takes over this process: signals reach it directly
    raise typer.Exit(subprocess.call(cmd))

