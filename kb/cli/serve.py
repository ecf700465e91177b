"""`kb serve` (the HTTP API) and `kb app` (the Streamlit web app): long-running faces over the same KBs.
Both only start a server; kb.server and kb.app do the work. FastAPI loads inside `kb serve` and Streamlit in
its own process, so the rest of the CLI never loads either.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

import kb.app
from kb.cli.options import err, out
from kb.config import Settings, load_settings
from kb.errors import ConfigError, MissingDependencyError
from kb.server.keys import exposure_refusal, is_loopback

HostOpt = Annotated[str | None, typer.Option(help="Address to listen on (default: server.host, 127.0.0.1). "
                                             "0.0.0.0 exposes your documents to the network.")]


NoKeyOpt = Annotated[bool, typer.Option(
    "--no-key", help="Serve on a non-loopback --host without server.api_key: anyone who can reach the port can "
    "read, upload to and delete every KB. Without this flag kb serve refuses to start there.")]


def guard_exposure(host: str, settings: Settings, no_key: bool, command: str) -> None:
    """The network rule of every server command (server/keys.py): refuse a non-loopback `host` without
    server.api_key unless --no-key (ConfigError), and warn when it is served without one."""
    refusal = exposure_refusal(host, settings.server.api_key, no_key, command)
    if refusal:
        raise ConfigError(refusal)
    _warn_if_exposed(host, settings)


def _warn_if_exposed(host: str, settings: Settings) -> None:
    if not is_loopback(host) and not settings.server.api_key:
        err.print(f"[yellow]warning:[/yellow] listening on {host} with no API key: anyone who can reach this "
                  "machine can read and change your knowledge bases. Set server.api_key (KB_SERVER__API_KEY).",
                  highlight=False, soft_wrap=True)


def serve_command(
    host: HostOpt = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 8000).")] = None,
    no_key: NoKeyOpt = False,
) -> None:
    """Start the HTTP API: OpenAI-compatible chat over your KBs (model "kb:<name>"), KB management.

    The interactive API docs are at http://HOST:PORT/docs. With server.api_key set, every route but
    /health needs `Authorization: Bearer <key>`. On an address other than loopback (127.0.0.1, ::1,
    localhost) kb serve needs server.api_key, or --no-key.
    """
    settings = load_settings()
    host = host or settings.server.host
    guard_exposure(host, settings, no_key, "kb serve")
    try:
        from kb.server.app import serve as run_server
    except ImportError as e:
        missing = e.name if e.name and not e.name.startswith("kb") else "fastapi"
        raise MissingDependencyError(missing, "server", "The HTTP API (kb serve)") from e
    run_server(settings, host=host, port=port or settings.server.port)


def app_command(
    host: HostOpt = None,
    port: Annotated[int, typer.Option(help="Port of the web app.")] = 8501,
    browser: Annotated[bool, typer.Option(help="Open a browser tab once the app answers.")] = True,
) -> None:
    """Start the Streamlit document Q&A app (chat with sources, knowledge bases, settings).

    Streamlit always runs headless, so a first start never stops at its "Welcome to Streamlit ... Email:"
    prompt and nothing is written to ~/.streamlit; kb opens the browser tab itself once the app answers.
    """
    import importlib.util
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError("streamlit", "app", "The web app (kb app)")
    settings = load_settings()
    host = host or settings.server.host
    _warn_if_exposed(host, settings)
    cmd = streamlit_command(settings, host, port)
    url = f"http://{_browse_host(host)}:{port}"
    out.print(f"kb app on {url} (Ctrl+C stops it)", highlight=False)
    sys.stdout.flush()
    if os.name == "posix":
        if browser:
            _open_browser_when_up(url, os.getpid())
        os.execv(sys.executable, cmd)  # Streamlit takes over this process: signals reach it directly
    if browser:
        import threading

        threading.Thread(target=_wait_then_open, args=(url, None), daemon=True).start()
    raise typer.Exit(subprocess.call(cmd))


def streamlit_command(settings: Settings, host: str, port: int) -> list[str]:
    """The `streamlit run` command line of `kb app`.

    `server.headless true` is what keeps Streamlit from asking for an email address on a machine where it
    never ran (streamlit/runtime/credentials.py skips the prompt when headless, in every Streamlit version
    kb supports; `server.showEmailPrompt` only exists since 1.46). It also stops Streamlit opening a tab,
    which kb does instead. Setting browser.gatherUsageStats here keeps the telemetry notice quiet too."""
    import math

    script = Path(kb.app.__file__).parent / "main.py"
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
            # Streamlit's uploader then shows (and enforces) kb's own limit instead of its 200 MB default.
            "--server.maxUploadSize", str(max(1, math.ceil(settings.server.max_upload_mb)))]


def _browse_host(host: str) -> str:
    """The address a browser on this machine uses for a server listening on `host`."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


APP_START_TIMEOUT = 120.0  # seconds; a cold first start on a busy machine takes 5-20


def _open_browser_when_up(url: str, server_pid: int) -> None:
    """Open `url` in a browser from a detached grandchild once the server answers (the parent is about to
    exec Streamlit). Forked twice so that init, not Streamlit, reaps it: no zombie stays behind."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        if os.fork() == 0:
            try:
                os.setsid()  # not in the terminal's process group: Ctrl+C is for Streamlit
                _wait_then_open(url, server_pid)
            finally:
                os._exit(0)
    finally:
        os._exit(0)


def _wait_then_open(url: str, server_pid: int | None, timeout: float = APP_START_TIMEOUT) -> bool:
    """Poll Streamlit's health route until it answers 200, then open a browser tab; give up when the server
    process (`server_pid`, POSIX only) is gone or after `timeout` seconds. Returns whether the server answered."""
    import time
    import urllib.request
    import webbrowser

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never ask an http_proxy for loopback
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_pid is not None:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                return False
        try:
            with direct.open(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    if not webbrowser.open(url):
                        err.print(f"kb app: no browser found; open {url} yourself", highlight=False)
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def register(app: typer.Typer) -> None:
    """Add serve and app to `app`."""
    app.command("serve")(serve_command)
    app.command("app")(app_command)
