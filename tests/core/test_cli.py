"""The `kb` command as a user runs it: exit codes, messages, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def run(settings):
    def _run(*args):
        return subprocess.run([sys.executable, "-m", "kb.cli", *args], env=dict(os.environ), capture_output=True,
                              text=True, timeout=300)

    return _run


def test_ingest_search_list_remove_roundtrip(run, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Tea\n\nGreen tea is steeped at eighty degrees for two minutes.\n")
    (folder / "b.txt").write_bytes("乌龙茶需要用沸水冲泡，第一泡要倒掉。".encode("gbk"))
    (folder / "c.pdf").write_bytes(b"%PDF-1.7 broken")
    (folder / "notes.xyz").write_text("unsupported")

    first = run("ingest", str(folder), "--kb", "cli", "--json")
    assert first.returncode == 1  # one file failed
    data = json.loads(first.stdout)
    assert data["counts"]["added"] == 2 and data["counts"]["failed"] == 1 and data["counts"]["unsupported"] == 1

    again = run("ingest", str(folder), "--kb", "cli")
    assert "2 unchanged" in again.stdout.replace("\n", " ") and "0 chunks embedded" in again.stdout

    hits = json.loads(run("search", "乌龙茶怎么泡", "--kb", "cli", "--json", "-k", "1").stdout)
    assert hits[0]["path"].endswith("b.txt") and "沸水" in hits[0]["text"]

    listed = run("list", "--kb", "cli")
    assert "a.md" in listed.stdout and "2 documents" in listed.stdout

    removed = run("remove", str(folder / "a.md"), "--kb", "cli")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert json.loads(run("kbs", "--json").stdout)[0]["documents"] == 1


def test_errors_are_one_line_with_a_fix(run):
    missing = run("search", "anything", "--kb", "nope")
    assert missing.returncode == 2
    assert "no knowledge base named 'nope'" in missing.stderr and "Traceback" not in missing.stderr
    bad = run("ingest", "/no/such/folder", "--kb", "x")
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr


def test_config_shows_effective_settings(run, monkeypatch):
    monkeypatch.setenv("KB_RETRIEVAL__K", "9")
    out = run("config", "--json")
    assert json.loads(out.stdout)["retrieval"]["k"] == 9


def test_help_explains_commands(run):
    out = run("--help").stdout
    for command in ("ingest", "search", "list", "remove", "kbs", "config"):
        assert command in out
