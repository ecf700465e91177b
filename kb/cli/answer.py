"""`kb ask` and `kb chat`: streamed, cited answers on the command line.

The answer streams to stdout as it is generated, then the sources it cites; notes (passages left
out, sentences without a source, timings) go to stderr. Ctrl-C stops the generation cleanly: the
model's stream is closed and, in `kb chat`, the interrupted turn is not kept. Both commands take the
same options (AnswerOptions, kb/cli/options.py) and answer through the answer service every face uses
(kb/answer/service.py). This module leaves out everything about how the answer is made (kb/answer/chain.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

import kb
from kb.answer.types import Turn
from kb.cli.options import AnswerOptions, answer_options, err, json_option, out


def _run(stream) -> object | None:
    """Print an AnswerStream's pieces; return its Answer, or None when Ctrl-C stopped it.

    Ctrl-C is remembered, and raised only where Python can stop cleanly. While llama.cpp's bindings run Python
    code (its sampler is called back from C), a KeyboardInterrupt raised there is printed by ctypes as an
    "Exception ignored" traceback and dropped, and the answer streams on to its end; so there the press only
    sets the flag, and the answer stops at the next piece (a few tens of milliseconds later).
    """
    pressed = threading.Event()

    def on_sigint(signum, frame):
        pressed.set()
        if not _in_llama_cpp(frame):
            raise KeyboardInterrupt

    previous = _swap_sigint(on_sigint)
    try:
        for piece in stream:
            if pressed.is_set():
                raise KeyboardInterrupt
            out.print(piece, end="", soft_wrap=True, markup=False)
        out.print()
        return stream.answer()
    except KeyboardInterrupt:
        stream.close()
        out.print()
        err.print("[yellow]stopped[/yellow]")
    finally:
        _swap_sigint(previous)
    return None


def _in_llama_cpp(frame) -> bool:
    """Whether the interrupted Python code is llama-cpp-python's (or called by it)."""
    while frame is not None:
        if f"{os.sep}llama_cpp{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _swap_sigint(handler):
    """Install `handler` for SIGINT and return the one it replaces (no-op outside the main thread)."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


def _report(answer, imports: float | None = None) -> None:
    """The cited sources (stdout), then notes and timings (stderr); `imports`: the command's start-up time."""
    if answer.status == "refused":
        return
    cited = answer.cited_passages
    if cited:
        out.print("\nSources:")
        inferred = {c.n for c in answer.citations if c.inferred}
        for p in cited:
            note = "  (attributed by kb: no marker)" if p.n in inferred else ""
            out.print(f"  [{p.n}] {p.location}{note}", markup=False, soft_wrap=True)
    if answer.translation:
        err.print(f"also searched, translated by the model: {answer.translation}", markup=False)
    if answer.dropped_markers:
        err.print(f"dropped markers that point at no passage: {sorted(set(answer.dropped_markers))}")
    if answer.unsupported:
        err.print(f"{len(answer.unsupported)} sentence(s) cite no passage: "
                  + " | ".join(s[:80] for s in answer.unsupported), markup=False)
    if answer.left_out:
        err.print(f"{len(answer.left_out)} retrieved passage(s) left out (no room in the model's window, or in a "
                  "language the model does not read)")
    how = (f"{answer.prompt_tokens} prompt tokens, {answer.backend}" if answer.answer_mode == "generate"
           else "quoted from the documents, no model (answer.mode; --answer-mode generate to have the model write it)")
    if answer.repetition_stopped:
        how += ", stopped where the model began to repeat itself"
    err.print(f"[dim]{_timing_line(answer.timings, imports)}, {how}[/dim]")


def _timing_line(t, imports: float | None) -> str:
    """'imports 0.45s, loading 1.10s, first token 3.12s, total 4.50s': where a fresh command's time went."""
    parts = [f"imports {imports:.2f}s"] if imports is not None else []
    loading = max(t.load_model, t.load_embedder)  # side by side: the longer of the two is what it cost
    if loading:
        parts.append(f"loading {loading:.2f}s")
    if t.first_token is not None:
        parts.append(f"first token {t.first_token:.2f}s")
    return ", ".join([*parts, f"total {t.total:.2f}s"])


def since_process_start() -> float | None:
    """Seconds since this process started (the interpreter, imports, settings), or None where unknown.

    Linux: /proc says when the process started, in clock ticks since boot. A shell may exec the last
    command of a line in its own process (`... && kb ask ...`), which then started with the shell: past
    about a second more than the time since kb itself began importing, that time is used instead."""
    imported = time.perf_counter() - kb.IMPORTED_AT
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        since = max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return imported
    return since if since <= imported + 1.0 else imported


AskJsonOpt = json_option("Print the Answer as JSON (no streaming); its timings also hold imports: seconds from "
                         "the command's start to the question.")


@answer_options
def ask(
    question: Annotated[str, typer.Argument(help="Your question, in Chinese or English.")],
    opts: AnswerOptions,
    as_json: AskJsonOpt = False,
) -> None:
    """Answer a question from a knowledge base, citing the passages [n] it comes from."""
    imports = since_process_start()
    service = _service(opts)
    stream = service.answer(opts.kb, question, **opts.search())
    if as_json:
        data = stream.answer().to_dict()
        if imports is not None:
            data["timings"]["imports"] = imports
        out.print_json(data=data)
        return
    answer = _run(stream)
    if answer is None:
        raise typer.Exit(130)
    _report(answer, imports)


@answer_options
def chat(opts: AnswerOptions) -> None:
    """Multi-turn chat with a knowledge base; follow-up questions see the conversation.

    Type /clear to forget the conversation, /exit (or Ctrl-D) to leave; Ctrl-C stops an answer."""
    service = _service(opts)
    base = service.kb(opts.kb)
    turns: list[Turn] = []  # the service decides what of them the model sees
    err.print(f"kb chat on '{base.name}' ({base.settings.llm.model or 'embedded SmolLM2'}); /exit to leave")
    while True:
        try:
            question = input("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.print()
            return
        if question in ("/exit", "/quit"):
            return
        if question == "/clear":
            turns.clear()
            err.print("conversation cleared")
            continue
        if not question:
            continue
        answer = _run(service.answer(base, question, turns, **opts.search()))
        if answer is not None:
            turns.append(Turn(question, answer))
            if answer.query != answer.question:
                err.print(f"[dim]searched for: {answer.query}[/dim]", markup=True)
            _report(answer)


def _service(opts: AnswerOptions):
    """The answer service for these options' settings. It loads here, not at `kb --help` (it imports the KB
    layer: numpy, the stores)."""
    from kb.answer.service import AnswerService

    return AnswerService(opts.settings())


def register(app: typer.Typer) -> None:
    """Add ask and chat to `app`."""
    app.command()(ask)
    app.command()(chat)
