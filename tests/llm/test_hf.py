"""The hf backend on a tiny random Llama with a ChatML template and a BPE tokenizer trained here."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from kb.config import LLMSettings  # noqa: E402
from kb.errors import ModelError  # noqa: E402
from kb.llm.base import Message, load_backend  # noqa: E402
from kb.llm.hf import HFBackend  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = ["the knowledge base answers questions with sources", "retrieval finds passages in documents",
        "the model writes an answer and cites the page", "hello world, how are you today?"] * 20


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", unk_token="<unk>",
                                                pad_token="<unk>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      eos_token_id=fast.eos_token_id, bos_token_id=None, pad_token_id=0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(tiny_llama):
    return load_backend(LLMSettings(backend="hf", model=str(tiny_llama), temperature=0,
                                    transformers={"prefill_chunk": 4, "device": "cpu"}))


def test_prompt_uses_the_chat_template(backend):
    msgs = [Message("system", "Cite sources."), Message("user", "hello world")]
    text = backend.tokenizer.decode(backend.prompt_ids(msgs))
    assert text == "<|im_start|>system\nCite sources.<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    assert backend.count_message_tokens(msgs) == len(backend.prompt_ids(msgs)) > backend.count_tokens("hello world")
    assert backend.context_window == 256


def test_greedy_generation_matches_transformers_and_streams_the_same(backend):
    msgs = [Message("user", "how are you today?")]
    ids = backend.prompt_ids(msgs)
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    theirs = out[0, len(ids):].tolist()
    eos = backend.tokenizer.eos_token_id
    theirs = theirs[: theirs.index(eos)] if eos in theirs else theirs
    text = backend.generate(msgs, max_new_tokens=12)
    assert text == backend.tokenizer.decode(theirs, skip_special_tokens=True) and text
    assert "".join(backend.stream(msgs, max_new_tokens=12)) == text


def test_chatglm_folders_are_refused_with_the_route(tmp_path):
    gen1 = tmp_path / "chatglm-6b"
    gen1.mkdir()
    (gen1 / "config.json").write_text(json.dumps({"model_type": "chatglm", "position_encoding_2d": True}))
    with pytest.raises(ModelError, match=r"first-generation ChatGLM-6B.*transformers>=4.27,<4.34.*llm.backend: openai"):
        HFBackend.from_folder(gen1, device="cpu")
    gen2 = tmp_path / "chatglm2-6b"
    gen2.mkdir()
    (gen2 / "config.json").write_text(json.dumps({"model_type": "chatglm", "multi_query_group_num": 2}))
    with pytest.raises(ModelError, match="llm.backend: chatglm2"):
        HFBackend.from_folder(gen2, device="cpu")


def test_missing_folder_and_missing_template(tiny_llama, tmp_path):
    with pytest.raises(ModelError, match="could not read a model config"):
        HFBackend.from_folder(tmp_path / "nothing-here", device="cpu")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        HFBackend(model, tok, context_window=256)
