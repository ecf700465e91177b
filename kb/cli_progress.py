"""Progress display for `kb ingest`: one bar for files, a counter for embedded chunks (on stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


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
