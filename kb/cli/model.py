"""`kb model ...`: convert a ChatGLM2 checkpoint, describe a model folder, chat with the configured model.

`register(app)` mounts `model_app` on kb's main app, which turns KBError into messages; this module only
raises them. transformers (the `hf` extra) loads inside `info`, and a missing one is a MissingDependencyError
that names the extra. It leaves out downloading models (no network here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kb.cli.options import BackendOpt, ModelOpt, QuantizeOpt, with_llm
from kb.config import load_settings
from kb.errors import MissingDependencyError, ModelError
from kb.llm.base import Message, load_backend

# The ChatGLM2 modules load inside the commands that read a checkpoint: at the top they would add 3 ms to every
# `kb` command with compiled bytecode, 30 ms without (`python -X importtime -m kb.cli --help`).

model_app = typer.Typer(help="Model tools: convert ChatGLM2, show model info, chat without retrieval.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@model_app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="THUDM chatglm2-6b or chatglm2-6b-32k folder.")],
    dst: Annotated[Path, typer.Argument(help="New folder for the GlmForCausalLM checkpoint.")],
) -> None:
    """Convert a THUDM ChatGLM2 checkpoint to transformers' native GLM format (done on first load otherwise)."""
    from kb.llm.chatglm2_convert import convert as convert_checkpoint

    out = convert_checkpoint(src, dst)
    typer.echo(f"converted {src} -> {out}; use it with llm.backend: chatglm2, llm.model: {out}")


def describe(path: Path) -> dict:
    """What kind of model `path` holds, and the GPU memory each quantization would need."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return {"kind": "gguf", "backend": "gguf", "path": str(path), "size_gb": round(path.stat().st_size / 1e9, 3)}
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{path} is neither a .gguf file nor a folder with config.json")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    info: dict = {"path": str(path)}
    if cfg.get("model_type") == "chatglm" and "multi_query_group_num" not in cfg:
        return {**info, "kind": "chatglm-6b (first generation)", "backend": "openai (separate server)"}
    try:  # optional (the hf extra) and slow to import: only `kb model info` on a folder needs it
        from transformers import AutoConfig, GlmConfig
    except ImportError as e:
        raise MissingDependencyError("transformers", "hf", "Describing a model folder (kb model info)") from e
    from kb.llm.chatglm2 import native_window
    from kb.llm.chatglm2_convert import glm_config_dict
    from kb.llm.torch_load import estimate_bytes

    if "multi_query_group_num" in cfg:
        ratio = cfg.get("rope_ratio", 1)
        info.update(kind="chatglm2-6b-32k" if ratio != 1 else "chatglm2-6b", backend="chatglm2", rope_ratio=ratio)
        config = GlmConfig(**glm_config_dict(cfg))
    else:
        config = AutoConfig.from_pretrained(str(path))
        info.update(kind=config.model_type, backend="chatglm2" if (path / "kb_convert.json").is_file() else "hf")
    window = native_window(config) if config.model_type == "glm" else config.max_position_embeddings
    info["context_window"] = window
    info["gpu_gb_at_full_context"] = {q: round(estimate_bytes(config, q, window) / 1e9, 2) for q in ("none", "8", "4")}
    return info


@model_app.command()
def info(path: Annotated[Path, typer.Argument(help="A model folder or .gguf file.")]) -> None:
    """Show what a model folder holds, which backend runs it, and its estimated GPU memory per quantization."""
    typer.echo(json.dumps(describe(path), indent=1, ensure_ascii=False))


@model_app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask the model (no documents are searched).")],
    backend: BackendOpt = None,
    model: ModelOpt = None,
    quantize: QuantizeOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Override llm.max_new_tokens.")] = None,
) -> None:
    """Stream the configured model's answer to one question: a check that the model setup works."""
    settings = with_llm(load_settings(), backend=backend, model=model, quantize=quantize,
                        max_new_tokens=max_new_tokens)
    backend = load_backend(settings.llm)
    placement = getattr(getattr(backend, "model", None), "kb_placement", None)
    where = f", {placement.device}, {placement.dtype}, quantize={placement.quantize}" if placement else ""
    typer.echo(f"[{backend.name}{where}]", err=True)  # e.g. says that a CPU runs fp32
    for piece in backend.stream([Message("user", question)]):
        typer.echo(piece, nl=False)
    typer.echo()


def register(app: typer.Typer) -> None:
    """Mount `kb model` (convert, info, chat) on `app`."""
    app.add_typer(model_app, name="model", help="Model tools: convert a ChatGLM2 checkpoint, show model info.")
