"""What a fine-tuning run writes and reads back: the adapter folder, checkpoints, and resuming from one.

The adapter folder is peft's files plus kb_finetune.json (kb.llm.adapter_manifest's format) holding the
run's method, base model, config, losses. A checkpoint-N folder is such an adapter plus training_state.pt:
step, optimizer, schedule and torch's RNG, so a resumed run continues exactly (the batches come from a
seeded shuffle per epoch, kb.llm.finetune.micro_batches). A checkpoint trained with another model, method
or adapter size is refused. This module leaves out the training loop (kb.llm.finetune).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from kb.errors import ConfigError
from kb.llm.adapter_manifest import ADAPTER_MANIFEST, FORMAT_VERSION, base_signature
from kb.llm.base import require

STATE_FILE = "training_state.pt"


def manifest_for(model: str, backend, cfg) -> dict:
    """kb_finetune.json of a run of `cfg` (a TrainConfig) on `backend`'s model, named `model`."""
    return {"format_version": FORMAT_VERSION, "method": cfg.method, "base_model": str(model),
            "backend": backend.name, "base": base_signature(backend.model.config), "config": asdict(cfg)}


def save_adapter(net, folder: Path, manifest: dict) -> Path:
    """peft's adapter files (safetensors) plus kb_finetune.json."""
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(folder), safe_serialization=True)
    (folder / ADAPTER_MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return folder


def save_checkpoint(net, optimizer, scheduler, folder: Path, manifest: dict, losses: list[float], step: int):
    """The adapter after `step` steps plus what resuming needs (optimizer, schedule, RNG)."""
    torch = require("torch", "finetune", "Fine-tuning")
    save_adapter(net, folder, {**manifest, "steps": step, "losses": losses, "checkpoint": True})
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state()}, folder / STATE_FILE)


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint-N subfolder with the highest N."""
    found = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def resume_from(resume, net, optimizer, scheduler, manifest: dict) -> tuple[int, list[float]]:
    """Load the checkpoint `resume` (or the latest under it) into the run; (its step, its losses so far)."""
    torch = require("torch", "finetune", "Fine-tuning")
    peft = require("peft", "finetune", "Fine-tuning")
    safetensors_torch = require("safetensors.torch", "finetune", "Fine-tuning", package="safetensors")
    resume = Path(resume).expanduser()
    ckpt = resume if (resume / STATE_FILE).is_file() else latest_checkpoint(resume)
    if ckpt is None:
        raise ConfigError(f"--resume {resume}: no checkpoint-N folder with {STATE_FILE} there; "
                          "checkpoints are written with --save-every")
    saved = json.loads((ckpt / ADAPTER_MANIFEST).read_text(encoding="utf-8"))
    pairs = [(k, saved.get(k), manifest[k]) for k in ("method", "base")]
    pairs += [(k, saved["config"].get(k), manifest["config"][k]) for k in ("lora_r", "prefix_len", "prefix_projection")]
    for key, was, now in pairs:
        if was != now:
            raise ConfigError(f"checkpoint {ckpt} was trained with {key}={was!r}, this run has {now!r}; "
                              "resume with the same --model, --method and adapter size")
    peft.set_peft_model_state_dict(net, safetensors_torch.load_file(str(ckpt / "adapter_model.safetensors")))
    state = torch.load(ckpt / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"], list(saved.get("losses", []))
