"""`kb search` (the passages that match a query) and `kb eval` (retrieval, or answer, quality on a question
file). Answering is kb/cli/answer.py; the metrics are kb/eval.py, the tables kb/cli/progress.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kb.cli.options import JsonOpt, KbOpt, ModeOpt, PathOpt, TypeOpt, check_modes, open_kb, out
from kb.config import ANSWER_MODES, RETRIEVAL_MODES


def search(
    query: Annotated[str, typer.Argument(help="What to look for, in any language.")],
    kb: KbOpt = None,
    k: Annotated[int | None, typer.Option("-k", help="Number of passages (default: retrieval.k).")] = None,
    mode: ModeOpt = None,
    path: PathOpt = None,
    file_type: TypeOpt = None,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", help="Use / skip the configured retrieval.reranker.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the passages that best match a query: score, file, page, section and a snippet."""
    hits = open_kb(kb).search(query, k, mode=mode, paths=path, file_types=file_type, rerank=rerank)
    if as_json:
        out.print_json(data=[h.__dict__ for h in hits])
        return
    if not hits:
        out.print("No passage matched.")
    for i, h in enumerate(hits, 1):
        out.print(f"[bold][{i}][/bold] {h.score:.3f}  [cyan]{h.location}[/cyan]", highlight=False)
        snippet = " ".join(h.text.split())
        out.print("    " + (snippet[:300] + ("…" if len(snippet) > 300 else "")), highlight=False)


def evaluate(
    questions: Annotated[Path, typer.Argument(help="JSONL file: {id, question, evidence: [...], lang?}.")],
    kb: KbOpt = None,
    mode: ModeOpt = None,
    compare: Annotated[str | None, typer.Option(
        help=f"Comma-separated retrieval modes to run side by side, e.g. {','.join(RETRIEVAL_MODES)}.")] = None,
    k: Annotated[int, typer.Option("-k", help="Passages retrieved per question.")] = 10,
    answers: Annotated[bool, typer.Option(
        "--answers", help="Ask each question through the answer chain (llm settings) and report, per group: "
        "answers citing a passage that holds the evidence, citation precision, keyword recall, loop rate, "
        "language match, refusal rates, time to first token and total time.")] = False,
    answer_mode: Annotated[str | None, typer.Option(
        "--answer-mode", help=f"With --answers: {', '.join(ANSWER_MODES)} (default: answer.mode); "
        f"comma-separated to compare, e.g. {','.join(ANSWER_MODES)}.")] = None,
    limit: Annotated[int | None, typer.Option(
        help="With --answers: only the first N answerable questions (all unanswerable ones are kept).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure retrieval on a question file: hit@1/5/10, MRR@10 and latency, overall and per group
    (--answers: the answers themselves)."""
    # Start-up: at the top, kb.eval and rich.progress would add 15 ms to every command with compiled bytecode,
    # 40 ms without (`python -X importtime -m kb.cli --help`).
    from kb.cli.progress import answer_tables, eval_table
    from kb.eval import answer_summary, load_questions, run_answers, run_retrieval, summarize

    compared = check_modes(compare, RETRIEVAL_MODES, "--compare")
    answer_modes = check_modes(answer_mode, ANSWER_MODES, "--answer-mode")
    qs = load_questions(questions)
    base = open_kb(kb)
    if answers:
        data = {m: answer_summary(run_answers(base, qs, limit, m))
                for m in answer_modes or [base.settings.answer.mode]}
        if as_json:
            out.print_json(data=data)
        else:
            for table in answer_tables(data):
                out.print(table)
        return
    results = {m: summarize(run_retrieval(base, qs, m, k)) for m in compared or [mode or base.settings.retrieval.mode]}
    if as_json:
        out.print_json(data=results)
        return
    out.print(eval_table(results, len(qs)))


def register(app: typer.Typer) -> None:
    """Add search and eval to `app`."""
    app.command()(search)
    app.command("eval")(evaluate)
