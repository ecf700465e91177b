"""The `kb` command line. It turns KBError into a one-line message and an exit status; nothing else
here knows about the index. Heavy libraries (torch, unstructured) load only in commands that need them.

Exit status: 0 success, 1 some files failed to ingest, 2 usage or input error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from kb.cli_answer import ask_command, chat_command
from kb.cli_doctor import doctor_command
from kb.cli_serve import app_command, serve_command
from kb.config import ANSWER_MODES, Settings, config_path, load_settings
from kb.errors import KBError

app = typer.Typer(
    help="kb: ask questions of your own documents (Chinese and English), with cited sources.\n\n"
    "Start with `kb ingest ./docs`, then `kb search \"...\"`. Settings come from config.yaml in KB_HOME "
    "(default ~/.kb) and KB_* environment variables; `kb config` shows them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

KbOpt = Annotated[str | None, typer.Option("--kb", help="Knowledge base name (default: settings 'kb').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _settings() -> Settings:
    return load_settings()


def _open(kb: str | None, create: bool = False):
    from kb.knowledge_base import KnowledgeBase

    return KnowledgeBase.open(kb, settings=_settings(), create=create)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to add (folders are searched recursively).")],
    kb: KbOpt = None,
    prune: Annotated[bool, typer.Option(help="Remove documents under these folders that no longer exist.")] = False,
    rebuild: Annotated[bool, typer.Option(help="Re-parse and re-embed everything into a fresh index "
                                          "(after changing the embedding model or chunking).")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait if another process is writing this KB.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the summary and failures.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add documents to a knowledge base. Unchanged files are skipped; changed ones are replaced."""
    from kb.cli_progress import IngestDisplay

    base = _open(kb, create=True)
    display = IngestDisplay(err, enabled=not (quiet or as_json))
    with display:
        report = base.ingest(*paths, prune=prune, rebuild=rebuild, wait=wait, progress=display.update)
    if as_json:
        out.print_json(data={
            "kb": base.name, "seconds": round(report.seconds, 3), "chunks_added": report.chunks_added,
            "chunks_removed": report.chunks_removed, "missing": report.missing,
            "ocr": {"pages": report.ocr_pages, "seconds": round(report.ocr_seconds, 3), "engine": report.ocr_engine,
                    "unread_pages": report.unread_pages, "unread_because": report.ocr_missing},
            "counts": {s: report.count(s) for s in ("added", "updated", "unchanged", "removed", "failed",
                                                      "unsupported")},
            "files": [f.__dict__ for f in report.files if f.status != "unchanged"],
        })
    else:
        _print_ingest_summary(base.name, report, quiet)
    raise typer.Exit(1 if report.failed else 0)


def _print_ingest_summary(name: str, report, quiet: bool) -> None:
    for f in report.failed:
        err.print(f"[red]failed[/red] {escape(f.path)}: {escape(f.reason)}", highlight=False, soft_wrap=True)
    unsupported = report.count("unsupported")
    parts = [f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "removed", "failed")
             if report.count(s)]
    if not report.changed and not report.failed:
        parts = [f"nothing changed ({report.count('unchanged')} files unchanged)"]
    line = f"KB '{name}': " + ", ".join(parts or ["no supported files found"])
    line += f"; {report.chunks_added} chunks embedded, {report.chunks_removed} removed in {report.seconds:.1f}s"
    if unsupported:
        line += f"; {unsupported} files of unsupported types skipped"
    out.print(line, highlight=False)
    if report.ocr_pages:
        files = sum(1 for f in report.files if f.ocr_pages)
        rate = report.ocr_pages / report.ocr_seconds if report.ocr_seconds else 0
        out.print(f"OCR ({report.ocr_engine}) read {report.ocr_pages} scanned pages or images in {files} files "
                  f"({rate:.2f} pages/s)", highlight=False)
    if report.unread_pages:
        files = [f for f in report.files if f.unread_pages]
        err.print(f"[yellow]{report.unread_pages} scanned pages[/yellow] in {len(files)} files were not read: "
                  f"{escape(report.ocr_missing)} (e.g. {escape(files[0].path)}). Once OCR can run, `kb remove` "
                  "such a file and ingest it again to read its scans.", highlight=False, soft_wrap=True)
    if report.missing:
        out.print(f"{len(report.missing)} documents in the KB are gone from disk; "
                  "run again with --prune to remove them.", highlight=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in any language.")],
    kb: KbOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="Number of passages (default: retrieval.k).")] = None,
    mode: Annotated[str | None, typer.Option(help="hybrid, dense or bm25 (default: retrieval.mode).")] = None,
    path: Annotated[list[str] | None, typer.Option(
        "--path", help="Only documents matching this glob or under this folder (repeatable).")] = None,
    file_type: Annotated[list[str] | None, typer.Option(
        "--type", help="Only documents of this file type, e.g. pdf (repeatable).")] = None,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", help="Use / skip the configured retrieval.reranker.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the passages that best match a query: score, file, page, section and a snippet."""
    hits = _open(kb).search(query, k, mode=mode, paths=path, file_types=file_type, rerank=rerank)
    if as_json:
        out.print_json(data=[h.__dict__ for h in hits])
        return
    if not hits:
        out.print("No passage matched.")
    for i, h in enumerate(hits, 1):
        out.print(f"[bold][{i}][/bold] {h.score:.3f}  [cyan]{h.location}[/cyan]", highlight=False)
        snippet = " ".join(h.text.split())
        out.print("    " + (snippet[:300] + ("…" if len(snippet) > 300 else "")), highlight=False)


@app.command("list")
def list_documents(kb: KbOpt = None, as_json: JsonOpt = False) -> None:
    """List the documents in a knowledge base."""
    docs = _open(kb).documents()
    if as_json:
        out.print_json(data=[d.__dict__ for d in docs])
        return
    for d in docs:
        out.print(f"{d.chunks:6d} chunks  {d.path}", highlight=False)
    out.print(f"{len(docs)} documents", highlight=False)


@app.command()
def remove(
    target: Annotated[str, typer.Argument(help="Document path, folder, or document id.")],
    kb: KbOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer.")] = 0,
) -> None:
    """Remove a document (or every document under a folder) from a knowledge base."""
    removed = _open(kb).remove(target, wait=wait)
    for d in removed:
        out.print(f"removed {d.path} ({d.chunks} chunks)", highlight=False)


@app.command()
def kbs(as_json: JsonOpt = False) -> None:
    """List the knowledge bases in KB_HOME."""
    from kb.knowledge_base import KnowledgeBase

    settings = _settings()
    names = KnowledgeBase.names(settings)
    stats = []
    for name in names:
        with KnowledgeBase.open(name, settings=settings, create=False) as base:
            stats.append(base.stats())
    if as_json:
        out.print_json(data=stats)
        return
    if not stats:
        from kb.stores import catalog

        out.print(f"No knowledge bases in {catalog(settings).where} yet; create one with `kb ingest PATH`.")
    for s in stats:
        size = f"{s['bytes_on_disk'] / 1e6:8.1f} MB" if s["bytes_on_disk"] is not None else "  (in Milvus)"
        out.print(f"{s['name']:20s} {s['documents']:6d} documents {s['chunks']:8d} chunks  {size}  ({s['embedder']})",
                  highlight=False)


@app.command()
def migrate(
    to: Annotated[str, typer.Option("--to", help="Where to copy the KB: 'local' ($KB_HOME/kbs), a Milvus Lite file "
                                    "(./kb.db) or a Milvus server (http://host:19530).")],
    kb: KbOpt = None,
    token: Annotated[str | None, typer.Option(help="Milvus credentials of the target (default: store.token).")] = None,
    db_name: Annotated[str | None, typer.Option(help="Milvus database of the target (default: store.db_name).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a KB of the same name at the target.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a knowledge base to another store (local <-> Milvus) with its vectors, without re-embedding.

    The source (store.backend / store.uri of your settings) is only read. The copy replaces the target's KB
    only after its counts and a sample of searches match the source. Afterwards point your settings at the
    target, e.g. KB_STORE__BACKEND=milvus KB_STORE__URI=./m.db."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from kb.knowledge_base import check_name
    from kb.migrate import migrate as run
    from kb.migrate import target_settings

    settings = _settings()
    name = check_name(kb or settings.kb)
    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), "chunks",
                   TimeRemainingColumn(), console=err, disable=as_json, transient=True)
    with bar:
        task = bar.add_task(f"copying '{name}'", total=None)
        report = run(name, settings, target_settings(settings, to, token, db_name), replace=replace,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        out.print_json(data={**report.__dict__, "chunks_per_second": round(report.chunks_per_second, 1)})
        return
    c = report.checks
    out.print(f"copied KB '{name}' from {report.source} to {report.target}: {report.documents} documents, "
              f"{report.chunks} chunks in {report.seconds:.1f}s ({report.chunks_per_second:.0f} chunks/s)",
              highlight=False, soft_wrap=True)
    if c.get("sampled"):
        out.print(f"verified: same documents and chunks; {c['sampled']} sampled chunks: dense top hit the same "
                  f"{c['dense_top1_same']:.0%}, top-5 overlap {c['dense_top5_overlap']:.0%}, keyword search finds "
                  f"the chunk {c['keyword_finds_itself']:.0%}", highlight=False, soft_wrap=True)
    backend = "local" if to == "local" else "milvus"
    out.print(f"use it with: KB_STORE__BACKEND={backend}" + ("" if to == "local" else f" KB_STORE__URI={to}"),
              highlight=False, soft_wrap=True)


@app.command("eval")
def evaluate(
    questions: Annotated[Path, typer.Argument(help="JSONL file: {id, question, evidence: [...], lang?}.")],
    kb: KbOpt = None,
    mode: Annotated[str | None, typer.Option(help="Retrieval mode to evaluate (default: retrieval.mode).")] = None,
    compare: Annotated[str | None, typer.Option(
        help="Comma-separated modes to run side by side, e.g. dense,bm25,hybrid.")] = None,
    k: Annotated[int, typer.Option("-k", help="Passages retrieved per question.")] = 10,
    answers: Annotated[bool, typer.Option(
        "--answers", help="Ask each question through the answer chain (llm settings) and report, per group: "
        "answers citing a passage that holds the evidence, citation precision, keyword recall, loop rate, "
        "language match, refusal rates, time to first token and total time.")] = False,
    answer_mode: Annotated[str | None, typer.Option(
        "--answer-mode", help="With --answers: generate, extract or auto (default: answer.mode); "
        "comma-separated to compare, e.g. generate,extract,auto.")] = None,
    limit: Annotated[int | None, typer.Option(
        help="With --answers: only the first N answerable questions (all unanswerable ones are kept).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure retrieval on a question file: hit@1/5/10, MRR@10 and latency, overall and per group
    (--answers: the answers themselves)."""
    from kb.eval import load_questions, run_retrieval, summarize

    qs = load_questions(questions)
    base = _open(kb)
    if answers:
        from kb.cli_progress import answer_tables
        from kb.eval import answer_summary, run_answers

        answer_modes = [m.strip() for m in (answer_mode or base.settings.answer.mode).split(",")]
        for m in answer_modes:
            if m not in ANSWER_MODES:
                raise typer.BadParameter(f"{m!r} is not an answer mode; use {', '.join(ANSWER_MODES)}",
                                         param_hint="--answer-mode")
        data = {m: answer_summary(run_answers(base, qs, limit, m)) for m in answer_modes}
        if as_json:
            out.print_json(data=data)
        else:
            for table in answer_tables(data):
                out.print(table)
        return
    modes = [m.strip() for m in compare.split(",")] if compare else [mode or base.settings.retrieval.mode]
    results = {m: summarize(run_retrieval(base, qs, m, k)) for m in modes}
    if as_json:
        out.print_json(data=results)
        return
    from kb.cli_progress import eval_table

    out.print(eval_table(results, len(qs)))


@app.command()
def config(as_json: JsonOpt = False) -> None:
    """Print the effective settings (defaults + config.yaml + KB_* variables)."""
    import yaml

    data = _settings().model_dump(mode="json")
    if as_json:
        out.print_json(data=data)
    else:
        out.print(f"# read from {config_path()} and KB_* environment variables", highlight=False)
        out.print(yaml.safe_dump(data, allow_unicode=True, sort_keys=False).rstrip(), highlight=False)


app.command("ask")(ask_command)
app.command("chat")(chat_command)

app.command("serve")(serve_command)
app.command("app")(app_command)
app.command("doctor")(doctor_command)


def _mount_optional_commands() -> None:
    try:
        from kb.llm.finetune_cli import register as register_finetune
    except ImportError:
        register_finetune = None
    if register_finetune:
        register_finetune(app)  # finetune, finetune-eval, finetune-merge
    try:
        from kb.llm.cli import model_app
    except ImportError:
        return
    app.add_typer(model_app, name="model", help="Model tools: convert a ChatGLM2 checkpoint, show model info.")


_mount_optional_commands()


def main() -> None:
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


if __name__ == "__main__":
    main()
