"""What the `kb` commands share: their options, defined once as `Annotated` types; the consoles; the
checks of option values (retrieval and answer modes); settings with the command line's `llm` overrides;
and opening a knowledge base.

`kb ask` and `kb chat` take the same set of options: `answer_options` gives a command that set and hands
it over as one `AnswerOptions`, so neither copies the other's signature. This module leaves out the
commands themselves and never imports the knowledge base at start-up.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from typing import Annotated, get_type_hints

import typer
from rich.console import Console

from kb.config import ANSWER_MODES, RETRIEVAL_MODES, LLMSettings, Settings, load_settings
from kb.config.llm import FLAT_NAMES

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
KEYWORD = inspect.Parameter.KEYWORD_ONLY


def check_modes(value: str | None, allowed: tuple[str, ...], option: str) -> list[str]:
    """The comma-separated modes of `value`, each one of `allowed`, else a usage error that names `option`."""
    modes = [m.strip() for m in (value or "").split(",") if m.strip()]
    for m in modes:
        if m not in allowed:
            raise typer.BadParameter(f"{m!r} is not one of {', '.join(allowed)}", param_hint=option)
    return modes


def _retrieval_mode(value: str | None) -> str | None:
    if value is not None:
        check_modes(value, RETRIEVAL_MODES, "--mode")
    return value


def _answer_mode(value: str | None) -> str | None:
    if value is not None:
        check_modes(value, ANSWER_MODES, "--answer-mode")
    return value


def json_option(help: str = "Print machine-readable JSON."):  # noqa: A002 (typer's own name)
    """The --json flag, with a help text that says what the command prints."""
    return Annotated[bool, typer.Option("--json", help=help)]


JsonOpt = json_option()
KbOpt = Annotated[str | None, typer.Option("--kb", help="Knowledge base name (default: settings 'kb').")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait if another process is writing this KB.")]
ModeOpt = Annotated[str | None, typer.Option(
    "--mode", callback=_retrieval_mode, help=f"Retrieval mode: {', '.join(RETRIEVAL_MODES)} (default: retrieval.mode).")]
PathOpt = Annotated[list[str] | None, typer.Option(
    "--path", help="Only documents matching this glob or under this folder (repeatable).")]
TypeOpt = Annotated[list[str] | None, typer.Option(
    "--type", help="Only documents of this file type, e.g. pdf (repeatable).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Override llm.model: a .gguf file, a ChatGLM2 / Hugging Face folder, or a server's model name.")]
BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="Override llm.backend: auto, gguf, chatglm2, hf, openai, scripted.")]
QuantizeOpt = Annotated[str | None, typer.Option(
    "--quantize", help="Override llm.transformers.quantize: 4 (NF4), 8 or none (CUDA, chatglm2/hf).")]
GeneralOpt = Annotated[bool, typer.Option(
    "--general", help="With no relevant passage, let the model answer from general knowledge (labelled).")]
AnswerModeOpt = Annotated[str | None, typer.Option(
    "--answer-mode", callback=_answer_mode, help="Override answer.mode: generate (the chat model writes the answer), "
    "extract (quote the passages' sentences that answer; no model, instant) or auto (extract when the model cannot "
    "write the question's language, e.g. the embedded SmolLM2 and a Chinese question, or no chat model is "
    "installed).")]


def with_llm(settings: Settings, **overrides) -> Settings:
    """`settings` with the llm fields the command line gave (None: not given), checked like the settings file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        data = settings.llm.model_dump()
        for name, value in given.items():  # a flat option (--quantize) goes to its group (llm.transformers)
            group, _, field = FLAT_NAMES.get(name, name).rpartition(".")
            (data[group] if group else data)[field] = value
        settings.llm = LLMSettings.model_validate(data)
    return settings


def open_kb(kb: str | None, settings: Settings | None = None, create: bool = False):
    """The knowledge base `kb` (default: the settings' one). kb.knowledge_base loads only here: `kb --help`
    and the commands that do not open a KB never import it."""
    from kb.knowledge_base import KnowledgeBase

    return KnowledgeBase.open(kb, settings=settings or load_settings(), create=create)


@dataclass(frozen=True)
class AnswerOptions:
    """The options `kb ask` and `kb chat` share (answer_options), as the command received them."""

    kb: KbOpt = None
    model: ModelOpt = None
    backend: BackendOpt = None
    quantize: QuantizeOpt = None
    path: PathOpt = None
    file_type: TypeOpt = None
    general: GeneralOpt = False
    answer_mode: AnswerModeOpt = None

    def settings(self) -> Settings:
        """The loaded settings with these overrides: llm fields, answer.mode, --general."""
        settings = with_llm(load_settings(), model=self.model, backend=self.backend, quantize=self.quantize)
        update = {"mode": self.answer_mode} if self.answer_mode is not None else {}
        if self.general:
            update["no_sources"] = "general"
        if update:
            settings.answer = settings.answer.model_copy(update=update)
        return settings

    def search(self) -> dict:
        """The search restrictions, as KnowledgeBase.ask / ChatSession.search take them."""
        return {"paths": self.path, "file_types": self.file_type}


def answer_options(command):
    """Give `command` the options of AnswerOptions in place of its parameter `opts: AnswerOptions`.

    typer reads a command's parameters from its signature: the wrapper shows it the command's own
    parameters with AnswerOptions' fields where `opts` was (so `--help` lists them in that order), and
    gathers those back into one AnswerOptions when typer calls it (always with keywords)."""
    hints = get_type_hints(command, include_extras=True)
    shared_hints = get_type_hints(AnswerOptions, include_extras=True)
    shared = [inspect.Parameter(f.name, KEYWORD, default=f.default, annotation=shared_hints[f.name])
              for f in fields(AnswerOptions)]
    params = []
    for p in inspect.signature(command).parameters.values():
        params.extend(shared if p.name == "opts" else [p.replace(kind=KEYWORD, annotation=hints[p.name])])

    @functools.wraps(command)
    def wrapper(**kwargs):
        opts = AnswerOptions(**{f.name: kwargs.pop(f.name) for f in fields(AnswerOptions)})
        return command(opts=opts, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
