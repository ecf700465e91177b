"""`kb finetune`, `kb finetune-eval`, `kb finetune-merge`: train, score and export an adapter.

`register(app)` adds the three commands to kb's main typer app; the main CLI turns KBError into
messages, so these only raise. torch and peft (the `finetune` extra) load inside the commands, through
kb.llm's `require`: a missing one is a MissingDependencyError that names the extra, and `kb --help` lists
the commands either way. It leaves out hyper-parameter search and multi-GPU launching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kb.config import LLMSettings
from kb.llm.base import load_backend

Opt = typer.Option
# kb.llm's training, scoring and merging modules load inside the commands: at the top they would add 6 ms to
# every `kb` command with compiled bytecode, 60 ms without (`python -X importtime -m kb.cli --help`).


def finetune(
    data: Annotated[Path, Opt("--data", help="Training records: JSON Lines or a JSON array of "
                              '{"content": question, "summary": answer}.')],
    out: Annotated[Path, Opt("--out", help="Folder for the adapter (and checkpoint-N subfolders).")],
    model: Annotated[str, Opt("--model", help="ChatGLM2 folder (THUDM or converted) or any HF causal LM folder.")],
    method: Annotated[str, Opt(help="lora, qlora (LoRA over NF4; CUDA) or prefix (P-Tuning v2).")] = "lora",
    eval_data: Annotated[Path | None, Opt("--eval", help="Eval records; their answer loss is reported.")] = None,
    prompt_key: Annotated[str, Opt(help="Record field with the question.")] = "content",
    response_key: Annotated[str, Opt(help="Record field with the answer.")] = "summary",
    history_key: Annotated[str | None, Opt(help="Record field with earlier [question, answer] pairs.")] = None,
    steps: Annotated[int, Opt(help="Optimizer steps.", min=1)] = 100,
    batch_size: Annotated[int, Opt(help="Records per forward pass.", min=1)] = 1,
    grad_accum: Annotated[int, Opt(help="Forward passes per optimizer step.", min=1)] = 16,
    lr: Annotated[float | None, Opt(help="Peak learning rate (default 2e-4 LoRA, 2e-2 prefix).")] = None,
    warmup_steps: Annotated[int, Opt(help="Linear warmup steps, then linear decay to 0.", min=0)] = 0,
    max_source: Annotated[int, Opt(help="Most prompt tokens (longer prompts keep their end).", min=4)] = 512,
    max_target: Annotated[int, Opt(help="Most answer tokens.", min=1)] = 512,
    save_every: Annotated[int, Opt(help="Write checkpoint-N every N steps (0: only the end).", min=0)] = 0,
    resume: Annotated[Path | None, Opt(help="Continue from a checkpoint-N folder, or the latest one in a folder.")] = None,
    lora_r: Annotated[int, Opt(help="LoRA rank.", min=1)] = 8,
    lora_alpha: Annotated[int, Opt(help="LoRA alpha.", min=1)] = 32,
    lora_dropout: Annotated[float, Opt(help="LoRA dropout.", min=0, max=1)] = 0.05,
    prefix_len: Annotated[int, Opt(help="P-Tuning v2 prefix length (THUDM's default 128).", min=1)] = 128,
    gradient_checkpointing: Annotated[bool | None, Opt(help="Recompute activations in backward (default: on "
                                                       "for lora/qlora; prefix cannot use it).")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda, cuda:N.")] = "auto",
    seed: Annotated[int, Opt(help="Shuffling and init seed.")] = 42,
) -> None:
    """Fine-tune a model on your own Q&A records and save the adapter (use it with llm.adapter)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kb.llm.finetune import TrainConfig, train

    cfg = TrainConfig(method=method, steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                      warmup_steps=warmup_steps, max_source=max_source, max_target=max_target,
                      save_every=save_every, seed=seed, gradient_checkpointing=gradient_checkpointing,
                      lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, prefix_len=prefix_len,
                      prompt_key=prompt_key, response_key=response_key, history_key=history_key)
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("loading data and model", total=None, stats="")

        def on_step(step: int, total: int, loss: float, rate: float) -> None:
            progress.update(task, description=f"{method} training", total=total, completed=step,
                            stats=f"loss {loss:.4f}  lr {rate:.2e}")

        result = train(model, data, out, cfg, eval_data=eval_data, resume=resume, device=device, on_step=on_step)
    tail = f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    typer.echo(f"adapter saved to {result.out} (final loss {result.losses[-1]:.4f}{tail}); "
               f"answer with it by setting llm.adapter: {result.out}")


def finetune_eval(
    data: Annotated[Path, Opt("--data", help="Eval records (same format as training).")],
    model: Annotated[str, Opt("--model", help="Base model folder.")],
    adapter: Annotated[str, Opt(help="Adapter folder from `kb finetune` (empty: the base model alone).")] = "",
    out: Annotated[Path, Opt("--out", help="JSON file for the scores and predictions.")] = Path("eval.json"),
    prompt_key: Annotated[str, Opt(help="Record field with the question.")] = "content",
    response_key: Annotated[str, Opt(help="Record field with the answer.")] = "summary",
    history_key: Annotated[str | None, Opt(help="Record field with earlier turns.")] = None,
    max_new_tokens: Annotated[int, Opt(help="Longest generated answer.", min=1)] = 256,
    limit: Annotated[int, Opt(help="Score only the first N records (0: all).", min=0)] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda, cuda:N.")] = "auto",
    quantize: Annotated[str, Opt(help="none, 4 or 8 (CUDA).")] = "none",
) -> None:
    """Generate answers for an eval file and score ROUGE-1/2/L and BLEU-4 (THUDM's ptuning method)."""
    from kb.llm.finetune_data import load_records
    from kb.llm.finetune_eval import evaluate, write_report

    records = load_records(data, prompt_key=prompt_key, response_key=response_key, history_key=history_key)
    records = records[:limit] if limit else records
    backend = load_backend(LLMSettings(model=model, adapter=adapter, device=device, quantize=quantize,
                                       temperature=0))
    report = evaluate(backend, records, max_new_tokens=max_new_tokens)
    report.update(model=model, adapter=adapter, data=str(data))
    path = write_report(report, out)
    typer.echo("  ".join(f"{k} {v:.2f}" for k, v in report["metrics"].items()) + f"  ({report['n']} records) -> {path}")


def finetune_merge(
    adapter: Annotated[Path, typer.Argument(help="LoRA adapter folder from `kb finetune`.")],
    out: Annotated[Path, typer.Argument(help="New folder for the merged full checkpoint.")],
    model: Annotated[str | None, Opt(help="Base model folder (default: the one the adapter was trained on).")] = None,
) -> None:
    """Fold a LoRA adapter into its base model and save a full checkpoint (fp32) for export."""
    from kb.llm.adapters import merge_adapter

    path = merge_adapter(adapter, out, model=model)
    typer.echo(f"merged {adapter} into {path}; use it as llm.model (no llm.adapter needed)")


def register(app: typer.Typer) -> None:
    """Add finetune, finetune-eval and finetune-merge to `app`."""
    app.command("finetune")(finetune)
    app.command("finetune-eval")(finetune_eval)
    app.command("finetune-merge")(finetune_merge)
