"""`kb app` on a machine where Streamlit never ran: it must come up without Streamlit's first-run
"Welcome to Streamlit ... Email:" prompt (which, with stdin closed, used to end the process), write
nothing to the user's home, and still open a browser tab when asked to.

The "browser" is a shell script named in $BROWSER (Python's webbrowser module runs it with the URL), so
the test sees exactly which URL kb opened, and when.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("streamlit")

START_TIMEOUT = 25.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _fresh_user(tmp_path):
    """An empty HOME and a $BROWSER that records the URLs it is asked to open: (home, record file, env)."""
    home = tmp_path / "home"
    home.mkdir()
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\n')
    browser.chmod(0o755)
    return home, opened, dict(os.environ, HOME=str(home), BROWSER=str(browser))


def test_first_start_has_no_prompt_and_opens_the_browser(settings, tmp_path):
    home, opened, env = _fresh_user(tmp_path)  # a user who never ran Streamlit: no ~/.streamlit
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "STREAMLIT_SERVER_HEADLESS", "STREAMLIT_BROWSER_GATHER_USAGE_STATS"):
        env.pop(name, None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "app", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            assert proc.poll() is None, f"kb app exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"no HTTP 200 within {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.3)
        while not opened.exists() and time.monotonic() < deadline + 5:
            time.sleep(0.1)
        assert opened.read_text().split() == [url]
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(15)
    output = log.read_text(errors="replace")
    assert "Email" not in output and "Welcome to Streamlit" not in output
    assert f"kb app on {url}" in output
    assert list(home.iterdir()) == []  # nothing written to the user's home (no ~/.streamlit)


def test_no_browser_opens_no_tab(settings, tmp_path):
    """--no-browser: the app serves, and no tab is opened."""
    home, opened, env = _fresh_user(tmp_path)  # a user who never ran Streamlit: no ~/.streamlit
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "app", "--no-browser", "--port", str(port)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        time.sleep(1.0)  # a tab would have been opened right after the first 200
        assert not opened.exists()
    finally:
        proc.terminate()
        proc.wait(15)
