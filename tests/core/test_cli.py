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


# --- the command line's structure, in process -----------------------------------------------------------

def _invoke(*args):
    from typer.testing import CliRunner

    from kb.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})  # the error box on one line


def test_every_command_group_is_listed_without_the_optional_packages(settings):
    """Optional packages load inside the commands: `kb --help` lists every command whatever is installed."""
    hidden = ["torch", "peft", "transformers", "fastapi", "uvicorn", "streamlit", "llama_cpp"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({hidden!r})); sys.argv = ['kb', '--help']\n"
            "from kb.cli import main\nmain()")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "COLUMNS": "200"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    listed = {line.strip("│ ").split()[0] for line in done.stdout.splitlines() if line.startswith("│ ")}
    assert {"ingest", "list", "remove", "kbs", "migrate", "config", "search", "eval", "ask", "chat", "serve", "app",
            "doctor", "finetune", "finetune-eval", "finetune-merge", "model"} <= listed


def test_ask_and_chat_share_their_options():
    import typer

    from kb.cli import app

    def options(name):
        command = typer.main.get_command(app).commands[name]
        return {p.name: (p.opts, p.help, p.default) for p in command.params if p.param_type_name == "option"}

    ask, chat = options("ask"), options("chat")
    assert set(ask) - set(chat) == {"as_json"}
    assert {k: v for k, v in ask.items() if k != "as_json"} == chat
    assert {"kb", "model", "backend", "quantize", "path", "file_type", "general", "answer_mode"} <= set(chat)


def test_modes_are_checked_against_the_one_list(settings):
    import typer

    from kb.cli import app
    from kb.config import RETRIEVAL_MODES

    for args in (["search", "tea", "--mode", "fuzzy"], ["eval", "q.jsonl", "--compare", "dense,fuzzy"]):
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        assert "'fuzzy' is not one of " + ", ".join(RETRIEVAL_MODES) in " ".join(result.output.split())
    for command in ("search", "eval"):
        mode = next(p for p in typer.main.get_command(app).commands[command].params if p.name == "mode")
        assert "Retrieval mode: " + ", ".join(RETRIEVAL_MODES) in mode.help
    result = _invoke("ask", "tea?", "--answer-mode", "guess")
    assert result.exit_code == 2 and "'guess' is not one of auto" in " ".join(result.output.split())


def test_a_missing_optional_package_names_its_extra(tmp_path, monkeypatch):
    import json
    import sys

    from kb.errors import MissingDependencyError

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the hf extra were not installed
    result = _invoke("model", "info", str(folder))
    assert isinstance(result.exception, MissingDependencyError)
    assert "pip install 'kb[hf]'" in str(result.exception)


def test_ctrl_c_stops_the_answer_even_when_a_native_callback_swallows_it(capsys):
    import signal
    import time

    from kb.cli.answer import _run

    made = []

    def pieces():
        for i in range(200):
            try:  # llama.cpp calls its sampler back in Python; ctypes prints an exception raised there and drops it
                if i == 5:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)  # the handler runs here, inside the "callback"
            except KeyboardInterrupt:
                pass
            made.append(i)
            yield f"piece {i} "

    assert _run(pieces()) is None
    assert len(made) < 10  # stopped at the next piece, not at the end of the answer
    assert "stopped" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


def test_ctrl_c_inside_llama_cpps_python_code_is_not_raised_there(capsys):
    import signal

    from kb.cli.answer import _run

    # Code that runs as if it were llama-cpp-python's (its file is in a llama_cpp folder): its sampler callback.
    callback = {}
    exec(compile("def sample(kill):\n    kill()\n    import time\n    time.sleep(0.05)\n",
                 os.path.join(os.sep, "site-packages", "llama_cpp", "_internals.py"), "exec"), callback)
    raised_inside = []
    made = []

    def pieces():
        for i in range(200):
            if i == 5:
                try:
                    callback["sample"](lambda: os.kill(os.getpid(), signal.SIGINT))
                except KeyboardInterrupt:
                    raised_inside.append(i)  # ctypes would print this as a traceback and drop it
            made.append(i)
            yield f"piece {i} "

    assert _run(pieces()) is None
    assert not raised_inside and len(made) < 10 and "stopped" in capsys.readouterr().err
