"""The `kb` command line: the typer app, every command group registered on it, and `main()`, which turns
KBError into a one-line message and an exit status. Nothing here knows about the index.

Each module of this package is one command group with a `register(app)` that adds its commands; every
group registers the same way, whatever it needs. A group whose packages are optional (torch, peft,
transformers, fastapi) imports them inside its commands, and a missing one is kb's MissingDependencyError
naming the extra to install, so `kb --help` always lists every command and an ImportError from a bug in
kb's own code is never hidden. Heavy libraries (torch, unstructured, the knowledge base) load only in the
commands that need them.

Exit status: 0 success, 1 some files failed to ingest (`kb doctor`: something is missing), 2 usage or
input error, 130 interrupted.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from kb.cli import answer, doctor, finetune, kbs, mcp, model, search, serve, show
from kb.cli.options import err
from kb.errors import KBError

app = typer.Typer(
    help="kb: ask questions of your own documents (Chinese and English), with cited sources.\n\n"
    "Start with `kb ingest ./docs`, then `kb search \"...\"`. Settings come from config.yaml in KB_HOME "
    "(default ~/.kb) and KB_* environment variables; `kb config` shows them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

GROUPS = (kbs, search, show, answer, serve, mcp, doctor, finetune, model)  # the order of `kb --help`
for group in GROUPS:
    group.register(app)


def main() -> None:
    """The `kb` console script (and `python -m kb.cli`)."""
    try:
        app()
    except KBError as e:
        # Escaped and unwrapped: a message holds paths and "pip install 'kb[extra]'", which rich would
        # otherwise read as markup or cut in two at the terminal's width.
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; everything committed so far is kept.")
        sys.exit(130)
