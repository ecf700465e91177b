"""`kb doctor`: prints kb.doctor's findings, or them as JSON, and exits 1 when something the settings need
is missing. The checks themselves are in kb/doctor/__init__.py."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from kb.cli.options import json_option, out
from kb.config import load_settings

_STYLE = {"ok": "green", "warn": "yellow", "error": "bold red"}
_TITLES = {"system": "System", "embedder": "Embedder", "chat model": "Chat model", "documents": "Documents",
           "extras": "Optional extras", "knowledge bases": "Knowledge bases"}


DoctorJsonOpt = json_option("Print the findings as JSON: {exit_code, counts, "
                            "findings: [{section, name, level, summary, fix, facts}]}.")


def doctor(as_json: DoctorJsonOpt = False) -> None:
    """Check this machine and the settings, and say what to do next.

    Reports Python; torch (CUDA, GPU, free VRAM) and bitsandbytes; the embedder the settings resolve to
    (built yet or built on first use, ONNX or torch, the languages it reads); the chat model (found or not,
    its languages, its context window, read from the model's metadata without loading it) and whether
    answers will be generated or extracted (answer.mode); the optional extras installed; and every knowledge
    base in KB_HOME: documents and chunks, its embedder against the settings', the vector index file
    (verified, or rebuilt from meta.sqlite on every open), and a write lock held by another process.
    KBs are only read: no lock is taken and no model is loaded.

    Each line is ok, warn (kb works, less well than it could) or error (something the settings need is
    missing or broken, so commands fail), and each warn or error names its fix: a command or a setting.
    A damaged or missing vector index file is a warning: nothing is lost, kb rebuilds the index from
    meta.sqlite. Exit status: 1 when there is an error, else 0.
    """
    from kb.doctor import exit_code, run_checks, to_json  # start-up: about 0.4 s, only for this command

    findings = run_checks(load_settings())
    if as_json:
        print(json.dumps(to_json(findings), ensure_ascii=False, indent=1))
        raise typer.Exit(exit_code(findings))
    width = max(len(f.name) for f in findings)
    for section, title in _TITLES.items():
        rows = [f for f in findings if f.section == section]
        if not rows:
            continue
        table = Table.grid(padding=(0, 2))
        table.add_column(width=5)
        table.add_column(no_wrap=True, width=width)
        table.add_column()
        for f in rows:
            text = escape(f.summary) + (f"\n[bold]fix:[/bold] {escape(f.fix)}" if f.fix and f.level != "ok" else "")
            table.add_row(f"[{_STYLE[f.level]}]{f.level}[/]", escape(f.name), text)
        out.print(f"[bold]{title}[/bold]")
        out.print(table)
    counts = {level: sum(f.level == level for f in findings) for level in ("warn", "error")}
    verdict = ("something the settings need is missing: see the fixes above" if counts["error"]
               else "kb works; the warnings say how to make it work better" if counts["warn"] else "all good")
    tally = ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in ((counts["error"], "error"),
                                                                        (counts["warn"], "warning")))
    out.print(f"\n{tally}: {verdict}")
    raise typer.Exit(exit_code(findings))


def register(app: typer.Typer) -> None:
    """Add doctor to `app`."""
    app.command()(doctor)
