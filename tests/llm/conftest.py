"""Fixtures: tiny random ChatGLM2 checkpoints in THUDM's format (see thudm_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sentencepiece")
pytest.importorskip("safetensors")

from thudm_fixtures import thudm_config, thudm_state_dict, train_tokenizer, write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    train_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def thudm_bin(tmp_path_factory, sp_model) -> Path:
    """A ChatGLM2-6B-shaped tiny checkpoint in .bin shards (fp16, like THUDM's)."""
    cfg = thudm_config()
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "chatglm2-tiny", cfg,
                            thudm_state_dict(cfg), "bin", sp_model)


@pytest.fixture(scope="session")
def thudm_32k(tmp_path_factory, sp_model) -> Path:
    """The -32K variant (rope_ratio 16) in safetensors shards, same weights."""
    cfg = thudm_config(rope_ratio=16, seq_length=2048)
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "chatglm2-tiny-32k", cfg,
                            thudm_state_dict(cfg), "safetensors", sp_model)
