"""Terminal output that is more than a line: the ingest progress display and the eval table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

CATCH_UP = {  # Progress kinds of a KB brought up to date before an ingest's writes: (the line, the bar's name)
    "keywords": ("building the keyword index", "keyword index"),
    "vectors": ("summing the vectors per language (once, for the dense index's centring)", "vector sums"),
}


class IngestDisplay:
    """Receives kb.ingest.report.Progress events; draws nothing when disabled or not a terminal, but for the
    lines that say what a long wait is (the keyword index of KB `name` built from its rows), unless disabled."""

    def __init__(self, console: Console, enabled: bool = True, name: str = "") -> None:
        self._lines = enabled
        self._enabled = enabled and console.is_terminal
        self._console = console
        self._name = name
        self._catching_up: dict = {}  # kind -> the bar of a catch-up build (None once done)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks embedded"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self._task = None
        self._pages: tuple | None = None  # (task id, path) of the OCR bar of the file being read
        self._chunks = 0

    def __enter__(self) -> IngestDisplay:
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._progress.stop()

    def update(self, event) -> None:
        if event.kind in CATCH_UP:
            self._catch_up(event)
        if not self._enabled:
            return
        if event.kind == "start":
            self._task = self._progress.add_task("files", total=event.total, chunks=0)
        elif event.kind == "page":
            self._page(event)
        elif event.kind == "embedded":
            self._chunks += event.chunks
            self._progress.update(self._task, chunks=self._chunks)
        elif event.kind == "file" and event.result.status not in ("unsupported", "removed"):
            self._progress.advance(self._task)
            if self._pages is not None and self._pages[1] == event.result.path:
                self._progress.remove_task(self._pages[0])
                self._pages = None
            if event.result.status == "failed":
                self._progress.console.print(f"[red]failed[/red] {event.result.path}: {event.result.reason}",
                                             highlight=False)


    def _catch_up(self, event) -> None:
        """A KB made by an older kb (or with store.keyword_engine fts5) is brought up to date on this ingest: a line
        when it starts and one when it is done, a bar with the count between them on a terminal (the keyword index:
        about 26 s per million chunks; the vectors' language sums: about 40 s)."""
        if not self._lines or not event.total:
            return
        what, bar = CATCH_UP[event.kind]
        if event.kind not in self._catching_up:
            self._console.print(f"{what} of KB '{self._name}' ({event.total:,} chunks)…", highlight=False)
            self._catching_up[event.kind] = self._progress.add_task(bar, total=event.total, chunks="-") \
                if self._enabled else -1
        task = self._catching_up[event.kind]
        if self._enabled:
            self._progress.update(task, completed=event.chunks)
        if event.chunks == event.total and task is not None:
            if self._enabled:
                self._progress.remove_task(task)
            self._catching_up[event.kind] = None
            self._console.print(f"{what} of KB '{self._name}': done, {event.total:,} chunks", highlight=False)

    def _page(self, event) -> None:
        """A bar per scanned file of more than one page: OCR reads a page every second or two."""
        if event.total <= 1:
            return
        if self._pages is None or self._pages[1] != event.path:
            if self._pages is not None:
                self._progress.remove_task(self._pages[0])
            task = self._progress.add_task(f"OCR {_short(event.path)}", total=event.total, chunks="-")
            self._pages = (task, event.path)
        self._progress.update(self._pages[0], completed=event.page)


def _short(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name if len(name) <= 40 else name[:18] + "…" + name[-20:]


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


ANSWER_ROWS = (("questions", None), ("cite evidence", "evidence_cited"), ("evidence in answer", "evidence_in_answer"),
               ("citation precision", "citation_precision"),
               ("keyword recall", "keyword_recall"), ("loop rate", "loop_rate"), ("guard stops", "guard_stop_rate"),
               ("language match", "language_match"), ("quoted", "extracted"),
               ("refused: unanswerable", "refusal_rate_unanswerable"),
               ("refused: answerable", "refusal_rate_answerable"), ("first token p50 s", "first_token_p50_s"),
               ("total p50 s", "total_p50_s"))


def answer_tables(results: dict) -> list[Table]:
    """One table per answer mode of `kb eval --answers` (kb.eval.answer_summary): a row per figure, a column
    per group (shares of the group's questions)."""
    tables = []
    for mode, summary in results.items():
        groups = [("all", summary["overall"])] + list(summary["groups"].items())
        table = Table(title=f"Answers, answer.mode {mode}")
        table.add_column("")
        for name, _ in groups:
            table.add_column(name, justify="right")
        for label, key in ANSWER_ROWS:
            cells = []
            for _, m in groups:
                value = m["answerable"] + m["unanswerable"] if key is None else m[key]
                cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
            table.add_row(label, *cells)
        tables.append(table)
    return tables
