"""`kb model convert / info / chat` through typer's test runner."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
from typer.testing import CliRunner  # noqa: E402

from kb.cli.model import model_app  # noqa: E402
from kb.llm.chatglm2_convert import MANIFEST  # noqa: E402

runner = CliRunner()

# THUDM/chatglm2-6b-32k's config.json (the fields that matter); no weights are needed for `info`.
CHATGLM2_32K = {"model_type": "chatglm", "padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696,
                "num_layers": 28, "num_attention_heads": 32, "multi_query_group_num": 2, "kv_channels": 128,
                "multi_query_attention": True, "add_qkv_bias": True, "layernorm_epsilon": 1e-05,
                "seq_length": 32768, "rope_ratio": 16, "eos_token_id": 2, "pad_token_id": 0}


def test_convert_then_info(thudm_bin, tmp_path):
    dst = tmp_path / "glm"
    result = runner.invoke(model_app, ["convert", str(thudm_bin), str(dst)])
    assert result.exit_code == 0, result.output
    assert (dst / MANIFEST).is_file() and "llm.backend: chatglm2" in result.output
    info = json.loads(runner.invoke(model_app, ["info", str(dst)]).output)
    assert info["kind"] == "glm" and info["backend"] == "chatglm2" and info["context_window"] == 512


def test_info_estimates_full_size_chatglm2_32k(tmp_path):
    folder = tmp_path / "chatglm2-6b-32k"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CHATGLM2_32K))
    result = runner.invoke(model_app, ["info", str(folder)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["kind"], info["backend"], info["rope_ratio"], info["context_window"]) == (
        "chatglm2-6b-32k", "chatglm2", 16, 32768)
    gb = info["gpu_gb_at_full_context"]
    # Measured on an H100 (docs/models.md): NF4 weights 4.05 GB, bf16 12.55 GB, full 32K KV cache 0.94 GB.
    assert 4.5 < gb["4"] < 5.5 and 13.0 < gb["none"] < 14.0 and gb["4"] < gb["8"] < gb["none"]


def test_info_on_first_generation_and_errors(tmp_path):
    gen1 = tmp_path / "chatglm-6b"
    gen1.mkdir()
    (gen1 / "config.json").write_text(json.dumps({"model_type": "chatglm", "position_encoding_2d": True}))
    assert "first generation" in json.loads(runner.invoke(model_app, ["info", str(gen1)]).output)["kind"]
    result = runner.invoke(model_app, ["info", str(tmp_path / "none")])
    assert result.exit_code != 0 and "neither a .gguf file nor a folder" in str(result.exception)


def test_chat_streams_the_configured_backend(monkeypatch, tmp_path):
    monkeypatch.setenv("KB_HOME", str(tmp_path))
    result = runner.invoke(model_app, ["chat", "what is kb?", "--backend", "scripted"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "You asked: what is kb?" and result.stderr.strip() == "[scripted]"


def test_chat_says_where_chatglm2_runs(monkeypatch, tmp_path, thudm_bin):
    monkeypatch.setenv("KB_HOME", str(tmp_path))
    monkeypatch.setenv("KB_LLM__CHATGLM2__CACHE_DIR", str(tmp_path / "glm"))
    result = runner.invoke(model_app, ["chat", "你好", "--model", str(thudm_bin), "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().endswith("[chatglm2, cpu, float32, quantize=none]")  # after the load progress bar
