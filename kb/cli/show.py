"""`kb show PASSAGE_ID`: a cited passage on its page, highlighted (kb/evidence.py), written as a PNG.

Passage ids are the `chunk_id` of `kb search --json` and the `chunk_ids` of each passage in `kb ask --json`.
For formats without pages (Word, HTML, Markdown, mail, slides, sheets) it prints the passage in its section's
text with the cited sentence marked instead.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kb.cli.options import JsonOpt, KbOpt, open_kb, out


def show(
    passage_id: Annotated[int, typer.Argument(help="The passage (chunk) id: `chunk_id` in `kb search --json`.")],
    kb: KbOpt = None,
    sentence: Annotated[str | None, typer.Option(
        "--sentence", "-s", help="The cited sentence to highlight (default: the whole passage).")] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the PNG here (default: it stays in KB_HOME/cache/evidence).")] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open the image in the system's viewer.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a passage where it stands: its page with the passage highlighted; prints the PNG's path."""
    from kb.evidence import view

    found = view(open_kb(kb), passage_id, sentence)
    if found.image and out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found.image, out_path)
        found = replace(found, image=str(out_path))
    if as_json:
        out.print_json(data=found.to_dict())
    elif found.image:
        out.print(found.image, highlight=False, soft_wrap=True)
        if found.note:
            out.print(f"note: {escape(found.note)}", highlight=False, soft_wrap=True)
    else:
        _print_marked(found)
        if out_path is not None:
            out.print(f"note: no page image for this format, so {escape(str(out_path))} was not written",
                      highlight=False, soft_wrap=True)
    if open_it and found.image:
        typer.launch(found.image)


def _print_marked(found) -> None:
    """A passage without a page image: its place, and its section's text with the sentence in reverse video."""
    start, end = found.mark or (0, 0)
    text = found.context
    out.print(f"[cyan]{escape(found.path)}[/cyan]" + (f", § {escape(found.section)}" if found.section else "")
              + " (no page image for this format)", highlight=False, soft_wrap=True)
    out.print(escape(text[:start]) + "[reverse]" + escape(text[start:end]) + "[/reverse]" + escape(text[end:]),
              highlight=False, soft_wrap=True)
    if found.note:
        out.print(f"note: {escape(found.note)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add show to `app`."""
    app.command()(show)
