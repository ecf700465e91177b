"""Terminal output that is more than a line: the ingest progress display and the eval table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class IngestDisplay:
    """Receives kb.ingest.pipeline.Progress events; draws nothing when disabled or not a terminal."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._enabled = enabled and console.is_terminal
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks embedded"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self._task = None
        self._chunks = 0

    def __enter__(self) -> IngestDisplay:
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._progress.stop()

    def update(self, event) -> None:
        if not self._enabled:
            return
        if event.kind == "start":
            self._task = self._progress.add_task("files", total=event.total, chunks=0)
        elif event.kind == "embedded":
            self._chunks += event.chunks
            self._progress.update(self._task, chunks=self._chunks)
        elif event.kind == "file" and event.result.status not in ("unsupported", "removed"):
            self._progress.advance(self._task)
            if event.result.status == "failed":
                self._progress.console.print(f"[red]failed[/red] {event.result.path}: {event.result.reason}",
                                             highlight=False)


def eval_table(results: dict, total_questions: int) -> Table:
    """One row per (mode, group): hit@1/5/10, MRR@10, p50/p95 latency."""
    table = Table(title=f"Retrieval on {total_questions} questions (unanswerable ones excluded)")
    for col in ("mode", "group", "n", "hit@1", "hit@5", "hit@10", "MRR@10", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col in ("mode", "group") else "right")
    for mode, summary in results.items():
        rows = [("all", summary["overall"])] + list(summary["groups"].items())
        for group, m in rows:
            if not m.get("questions"):
                continue
            table.add_row(mode, group, str(m["questions"]), f"{m['hit@1']:.3f}", f"{m['hit@5']:.3f}",
                          f"{m['hit@10']:.3f}", f"{m['mrr@10']:.3f}", f"{m['p50_ms']:.1f}", f"{m['p95_ms']:.1f}")
    return table


ANSWER_COLUMNS = (("evidence", "evidence_cited"), ("cit.prec", "citation_precision"), ("kw recall", "keyword_recall"),
                  ("loops", "loop_rate"), ("guard", "guard_stop_rate"), ("lang ok", "language_match"),
                  ("quoted", "extracted"), ("refuse no", "refusal_rate_unanswerable"),
                  ("refuse yes", "refusal_rate_answerable"), ("1st tok p50", "first_token_p50_s"),
                  ("total p50", "total_p50_s"))


def answer_table(results: dict) -> Table:
    """One row per (answer mode, group) of `kb eval --answers` (kb.eval.answer_summary per mode)."""
    table = Table(title="Answers (shares of the group's questions; times in seconds)")
    for col in ("mode", "group", "n", *(name for name, _ in ANSWER_COLUMNS)):
        table.add_column(col, justify="left" if col in ("mode", "group") else "right")
    for mode, summary in results.items():
        for group, m in [("all", summary["overall"])] + list(summary["groups"].items()):
            cells = ["-" if m[key] is None else f"{m[key]:.3f}" if isinstance(m[key], float) else str(m[key])
                     for _, key in ANSWER_COLUMNS]
            table.add_row(mode, group, str(m["answerable"] + m["unanswerable"]), *cells)
    return table
