"""Commands that manage knowledge bases: `kb ingest`, `list`, `remove`, `kbs`, `migrate` and `config`.

They open a KB through kb's public API and print what it reports; searching and answering are in
kb/cli/search.py and kb/cli/answer.py. The knowledge base, the ingest display and the migration load inside
the commands, so `kb --help` imports none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape

from kb.cli.options import JsonOpt, KbOpt, WaitOpt, err, open_kb, out
from kb.config import config_path, load_settings


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to add (folders are searched recursively).")],
    kb: KbOpt = None,
    prune: Annotated[bool, typer.Option(help="Remove documents under these folders that no longer exist.")] = False,
    rebuild: Annotated[bool, typer.Option(help="Re-parse and re-embed everything into a fresh index "
                                          "(after changing the embedding model or chunking).")] = False,
    wait: WaitOpt = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the summary and failures.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add documents to a knowledge base. Unchanged files are skipped; changed ones are replaced."""
    from kb.cli.progress import IngestDisplay  # start-up: rich.progress, about 10 ms

    base = open_kb(kb, create=True)
    display = IngestDisplay(err, enabled=not (quiet or as_json), name=base.name)
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


def list_documents(kb: KbOpt = None, as_json: JsonOpt = False) -> None:
    """List the documents in a knowledge base."""
    docs = open_kb(kb).documents()
    if as_json:
        out.print_json(data=[d.__dict__ for d in docs])
        return
    for d in docs:
        out.print(f"{d.chunks:6d} chunks  {d.path}", highlight=False)
    out.print(f"{len(docs)} documents", highlight=False)


def remove(
    target: Annotated[str, typer.Argument(help="Document path, folder, or document id.")],
    kb: KbOpt = None,
    wait: WaitOpt = 0,
) -> None:
    """Remove a document (or every document under a folder) from a knowledge base."""
    removed = open_kb(kb).remove(target, wait=wait)
    for d in removed:
        out.print(f"removed {d.path} ({d.chunks} chunks)", highlight=False)


def kbs(as_json: JsonOpt = False) -> None:
    """List the knowledge bases in KB_HOME."""
    from kb.knowledge_base import KnowledgeBase
    from kb.stores import catalog

    settings = load_settings()
    stats = []
    for name in KnowledgeBase.names(settings):
        with KnowledgeBase.open(name, settings=settings, create=False) as base:
            stats.append(base.stats())
    if as_json:
        out.print_json(data=stats)
        return
    if not stats:
        out.print(f"No knowledge bases in {catalog(settings).where} yet; create one with `kb ingest PATH`.")
    for s in stats:
        size = f"{s['bytes_on_disk'] / 1e6:8.1f} MB" if s["bytes_on_disk"] is not None else "  (in Milvus)"
        out.print(f"{s['name']:20s} {s['documents']:6d} documents {s['chunks']:8d} chunks  {size}  ({s['embedder']})",
                  highlight=False)


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
    from kb.stores.migrate import migrate as run  # start-up: rich.progress and kb.stores.migrate, about 30 ms
    from kb.stores.migrate import target_settings

    settings = load_settings()
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


def config(as_json: JsonOpt = False) -> None:
    """Print the effective settings (defaults + config.yaml + KB_* variables)."""
    data = load_settings().model_dump(mode="json")
    if as_json:
        out.print_json(data=data)
    else:
        out.print(f"# read from {config_path()} and KB_* environment variables", highlight=False)
        out.print(yaml.safe_dump(data, allow_unicode=True, sort_keys=False).rstrip(), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ingest, list, remove, kbs, migrate and config to `app`."""
    app.command()(ingest)
    app.command("list")(list_documents)
    app.command()(remove)
    app.command()(kbs)
    app.command()(migrate)
    app.command()(config)
