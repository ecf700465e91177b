"""Fine-tuning on the tiny random ChatGLM2: data and labels, LoRA / prefix training, serving, merge, metrics."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import sentencepiece as spm  # noqa: E402
from test_hf import tiny_llama as llama  # noqa: E402, F401 - the tiny Llama chat model, as fixture `llama`

from kb.config import LLMSettings  # noqa: E402
from kb.errors import ConfigError, ModelError, ParseError  # noqa: E402
from kb.llm.adapters import ADAPTER_MANIFEST, merge_adapter  # noqa: E402
from kb.llm.base import Message, load_backend  # noqa: E402
from kb.llm.chatglm2_convert import convert  # noqa: E402
from kb.llm.finetune import TrainConfig, forward, train  # noqa: E402
from kb.llm.finetune_data import IGNORE, Record, collate, encode, load_records  # noqa: E402
from kb.llm.finetune_eval import bleu4, corpus_scores, rouge_l, rouge_n, words  # noqa: E402

ANSWER = "今天天气很好，适合出门散步。"
QUESTION = "今天天气怎么样？"


def _records(n: int = 50) -> list[dict]:
    return [{"content": f"{QUESTION}{i % 5}", "summary": ANSWER} for i in range(n)]


@pytest.fixture(scope="module")
def glm(thudm_bin, tmp_path_factory):
    """The tiny checkpoint converted once (a converted folder loads without converting again)."""
    return convert(thudm_bin, tmp_path_factory.mktemp("ft") / "glm")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in _records()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lora(glm, train_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ad") / "lora"
    cfg = TrainConfig(method="lora", steps=8, batch_size=4, grad_accum=1, lr=1e-2, lora_dropout=0.0)
    return train(str(glm), train_file, out, cfg, device="cpu", eval_data=train_file)


def _backend(glm, adapter=""):
    return load_backend(LLMSettings(backend="chatglm2", model=str(glm), adapter=str(adapter),
                                    transformers={"device": "cpu"}, temperature=0, max_new_tokens=24))


def _first_logits(backend, question=QUESTION + "1"):
    from kb.llm.generation import new_cache, prefill

    with torch.inference_mode():
        return prefill(backend.model, backend.prompt_ids([Message("user", question)]), new_cache(backend.model))


# --- data ---------------------------------------------------------------------------------------

def test_jsonl_array_custom_keys_and_history(tmp_path):
    rows = [{"q": "问一", "a": "答一", "h": [["早", "好"]]}, {"q": "问二", "a": "答二"}]
    (tmp_path / "d.jsonl").write_text("\n\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    for name, lines in (("d.jsonl", [1, 3]), ("d.json", [2, 12])):
        recs = load_records(tmp_path / name, prompt_key="q", response_key="a", history_key="h")
        assert [(r.prompt, r.response, r.history, r.line) for r in recs] == [
            ("问一", "答一", (("早", "好"),), lines[0]), ("问二", "答二", (), lines[1])]
    assert [m.role for m in recs[0].messages()] == ["user", "assistant", "user"]


@pytest.mark.parametrize("text, message", [
    ('{"content": "a", "summary": "b"}\n{"content": "c", "summary": "d"}\n{"content": "e"}\n',
     r"line 3: field 'summary' is missing"),
    ('{"content": "a", "summary": "b"}\n{"content": "c", "summary": 5}\n', r"line 2: field 'summary' must be a string"),
    ('{"content": "a", "summary": "b"}\n{"content": "c", "summ\n', r"line 2: not valid JSON"),
    ('[\n  {"content": "a", "summary": "b"},\n  ["x"]\n]', r"line 3: a record must be a JSON object"),
    ('[\n  {"content": "a", "summary": "b"},\n\n  {"summary": "b"}\n]', r"line 4: field 'content' is missing"),
])
def test_malformed_record_names_line_and_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParseError, match=message):
        load_records(path)


def test_labels_cover_only_the_answer(glm):
    """Expected ids built by hand from the SentencePiece model and ChatGLM2's prompt format."""
    from kb.llm.chatglm2_tokenizer import ChatGLM2Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(glm / "tokenizer.model"))
    gmask, sop, eos = sp.vocab_size() + 1, sp.vocab_size() + 3, 2
    tok = ChatGLM2Tokenizer(glm / "tokenizer.model")
    backend_prompt = _backend(glm).prompt_ids
    rec = Record("q2", "the answer", (("q1", "a1"),))
    ex = encode(rec, backend_prompt, tok.encode, tok.eos_id, max_source=512, max_target=512)
    prompt = [gmask, sop] + sp.encode("[Round 1]\n\n问：q1\n\n答：a1\n\n[Round 2]\n\n问：q2\n\n答：")
    answer = sp.encode("the answer")
    assert ex.input_ids == prompt + answer + [eos]
    assert ex.labels == [IGNORE] * len(prompt) + answer + [eos]
    short = encode(rec, backend_prompt, tok.encode, tok.eos_id, max_source=6, max_target=2)
    assert short.input_ids == [gmask, sop] + prompt[-4:] + answer[:2] + [eos]
    assert short.labels == [IGNORE] * 6 + answer[:2] + [eos]
    batch = collate([short, ex], pad_id=0)
    assert batch["labels"][0].tolist() == short.labels + [IGNORE] * (len(ex.labels) - len(short.labels))
    assert batch["attention_mask"][0].sum() == len(short.input_ids) and batch["attention_mask"][1].all()


# --- training and serving -----------------------------------------------------------------------

def test_lora_training_lowers_loss_and_the_adapter_answers(lora, glm):
    assert lora.losses[-1] < 0.3 * lora.losses[0]
    assert lora.eval_loss is not None and lora.eval_loss < lora.losses[0]
    manifest = json.loads((lora.out / ADAPTER_MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["method"] == "lora" and manifest["base"]["hidden_size"] == 64
    assert (lora.out / "adapter_model.safetensors").is_file()
    base, tuned = _backend(glm), _backend(glm, lora.out)
    msgs = [Message("user", QUESTION + "3")]
    assert base.generate(msgs) != ANSWER
    # the random model learned the trained answer (the tiny SentencePiece model writes ， as ,)
    assert tuned.generate(msgs) == "今天天气很好,适合出门散步。" == tuned.tokenizer.decode(tuned.tokenizer.encode(ANSWER))
    assert not torch.allclose(_first_logits(base), _first_logits(tuned))


def test_lora_targets_attention_and_mlp_and_checkpoints_activations(glm):
    from transformers import GlmForCausalLM

    from kb.llm.finetune import wrap

    net = wrap(GlmForCausalLM.from_pretrained(str(glm)), TrainConfig())
    wrapped = {n.rsplit(".", 1)[-1] for n, m in net.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"}  # not lm_head
    assert all("lora_" in n for n, p in net.named_parameters() if p.requires_grad)
    assert all(layer.gradient_checkpointing for layer in net.get_base_model().model.layers)


def test_prefix_tuning_trains_and_serves_the_trained_prefix(glm, train_file, tmp_path):
    cfg = TrainConfig(method="prefix", steps=6, batch_size=4, grad_accum=1, lr=3e-2, prefix_len=4)
    result = train(str(glm), train_file, tmp_path / "prefix", cfg, device="cpu")
    assert result.losses[-1] < result.losses[0]
    tuned = _backend(glm, result.out)
    ids = tuned.prompt_ids([Message("user", QUESTION)])
    batch = collate([encode(Record(QUESTION, ""), tuned.prompt_ids, lambda t: [], 2, max_source=99, max_target=9)], 0)
    with torch.inference_mode():  # serving (prefix put into the KV cache) = kb's training forward = peft's
        ours = forward(tuned.model.peft_model, batch).logits[0, len(ids) - 1]
        peft_own = tuned.model.peft_model(input_ids=torch.tensor([ids])).logits[0, -1]
    served = _first_logits(tuned, QUESTION)[0]
    torch.testing.assert_close(served, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(served, peft_own, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_first_logits(_backend(glm), QUESTION), _first_logits(tuned, QUESTION))
    assert tuned.generate([Message("user", QUESTION)])  # the token loop runs through the prefix
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        train(str(glm), train_file, tmp_path / "p2", TrainConfig(method="prefix", gradient_checkpointing=True),
              device="cpu")


def test_resume_from_a_checkpoint_continues_exactly(glm, train_file, tmp_path):
    cfg = TrainConfig(method="lora", steps=4, batch_size=2, grad_accum=2, lr=5e-3, warmup_steps=1, save_every=2)
    whole = train(str(glm), train_file, tmp_path / "whole", cfg, device="cpu")
    assert (tmp_path / "whole" / "checkpoint-2" / "training_state.pt").is_file()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "part" / "checkpoint-2")
    resumed = train(str(glm), train_file, tmp_path / "part", cfg, device="cpu", resume=tmp_path / "part")
    assert resumed.resumed_from == 2 and resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    from safetensors.torch import load_file

    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (whole.out, resumed.out))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ConfigError, match="lora_r=8, this run has 4"):
        train(str(glm), train_file, tmp_path / "part", replace(cfg, lora_r=4), device="cpu", resume=tmp_path / "part")
    with pytest.raises(ConfigError, match="no checkpoint-N folder"):
        train(str(glm), train_file, tmp_path / "x", cfg, device="cpu", resume=tmp_path / "empty")


def test_merged_checkpoint_gives_the_logits_of_base_plus_adapter(lora, glm, tmp_path):
    merged = merge_adapter(lora.out, tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    want = _first_logits(_backend(glm, lora.out))
    got = _first_logits(_backend(merged))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_qlora_on_cpu_is_a_clear_error(glm, train_file, tmp_path):
    with pytest.raises(ModelError, match="qlora.*needs a CUDA GPU.*--method lora"):
        train(str(glm), train_file, tmp_path / "q", TrainConfig(method="qlora"), device="cpu")


def test_adapter_errors_name_the_problem(lora, glm, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        _backend(glm, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a peft adapter"):
        _backend(glm, tmp_path / "empty")
    other = shutil.copytree(lora.out, tmp_path / "other")
    manifest = json.loads((other / ADAPTER_MANIFEST).read_text())
    manifest["base"]["hidden_size"] = 4096
    (other / ADAPTER_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="does not match the loaded model.*hidden_size 4096 vs 64"):
        _backend(glm, other)


# --- metrics ------------------------------------------------------------------------------------

def test_rouge_and_bleu_match_hand_computed_values():
    hyp, ref = "我爱北京天安门", "我爱北京"
    assert words(hyp) == ["我", "爱", "北京", "天安门"] and words(ref) == ["我", "爱", "北京"]
    h, r = words(hyp), words(ref)
    assert rouge_n(h, r, 1) == pytest.approx(2 * 0.75 * 1 / 1.75)  # P 3/4, R 3/3
    assert rouge_n(h, r, 2) == pytest.approx(0.8)  # bigrams: P 2/3, R 2/2
    assert rouge_l(h, r) == pytest.approx(2 * 0.75 * 1 / 1.75)  # LCS 3 words: P 3/4, R 3/3
    assert rouge_l(["a", "b", "c", "d"], ["b", "x", "d", "c"]) == pytest.approx(0.5)  # LCS 2: P 2/4, R 2/4
    # characters: 1-4-gram precisions 4/7, 3/6, 2/5, 1/4; hypothesis longer, so no brevity penalty
    assert bleu4(hyp, ref) == pytest.approx((4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    # 2 characters: 3- and 4-grams have none, smoothed to 1/2 and 1/4; brevity penalty exp(1 - 7/2)
    assert bleu4("北京", hyp) == pytest.approx(2.718281828 ** -2.5 * (1 * 1 * 0.5 * 0.25) ** 0.25)
    assert bleu4("猫", hyp) == 0.0
    scores = corpus_scores([hyp, ""], [ref, ref])
    assert scores == {"rouge-1": round(85.7143 / 2, 4), "rouge-2": 40.0, "rouge-l": round(85.7143 / 2, 4),
                      "bleu-4": round(100 * (4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25 / 2, 4)}


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_finetune_eval_merge(glm, train_file, tmp_path):
    from typer.testing import CliRunner

    from kb.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-adapter"
    res = runner.invoke(app, ["finetune", "--data", str(train_file), "--out", str(out), "--model", str(glm),
                              "--steps", "2", "--batch-size", "4", "--grad-accum", "1", "--lr", "1e-2",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"llm.adapter: {out}" in res.output and (out / ADAPTER_MANIFEST).is_file()
    report_path = tmp_path / "eval.json"
    res = runner.invoke(app, ["finetune-eval", "--data", str(train_file), "--model", str(glm), "--adapter", str(out),
                              "--out", str(report_path), "--limit", "2", "--max-new-tokens", "6", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["n"] == 2 and set(report["metrics"]) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}
    assert report["examples"][0]["reference"] == ANSWER and "rouge-1" in res.output
    res = runner.invoke(app, ["finetune-merge", str(out), str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "merged" / "config.json").is_file() and "llm.model" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "q", "summary": "a"}\n{"content": "q"}\n', encoding="utf-8")
    res = runner.invoke(app, ["finetune", "--data", str(bad), "--out", str(tmp_path / "x"), "--model", str(glm)])
    assert isinstance(res.exception, ParseError) and "line 2: field 'summary' is missing" in str(res.exception)


# --- any Hugging Face causal LM -----------------------------------------------------------------

def test_lora_on_a_hf_chat_model_uses_its_chat_template(llama, glm, tmp_path):  # noqa: F811 (fixture)
    from kb.llm.hf import HFBackend

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"q": "hello world", "a": "the model writes an answer"}] * 8), encoding="utf-8")
    cfg = TrainConfig(method="lora", steps=4, batch_size=4, grad_accum=1, lr=1e-2, lora_dropout=0.0,
                      prompt_key="q", response_key="a")
    result = train(str(llama), data, tmp_path / "ad", cfg, device="cpu")
    assert result.losses[-1] < result.losses[0]
    base = HFBackend.from_folder(llama, device="cpu", temperature=0)
    tok = base.tokenizer
    ex = encode(Record("hello world", "the model"), base.prompt_ids,
                lambda t: tok.encode(t, add_special_tokens=False), tok.eos_token_id, max_source=99, max_target=99)
    assert tok.decode(ex.input_ids) == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\nthe model<|im_end|>"
    assert tok.decode([t for t in ex.labels if t != IGNORE]) == "the model<|im_end|>"
    tuned = load_backend(LLMSettings(backend="hf", model=str(llama), adapter=str(result.out), device="cpu",
                                     temperature=0))
    assert not torch.allclose(_first_logits(base, "hello world"), _first_logits(tuned, "hello world"))
    merged = load_backend(LLMSettings(model=str(merge_adapter(result.out, tmp_path / "merged")), device="cpu"))
    assert merged.name == "hf" and merged.prompt_ids([Message("user", "hi")]) == base.prompt_ids([Message("user", "hi")])
    torch.testing.assert_close(_first_logits(merged, "hello world"), _first_logits(tuned, "hello world"),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="does not match the loaded model .*model_type llama vs glm"):
        _backend(glm, result.out)


def test_without_peft_the_error_names_the_extra(lora, glm, monkeypatch):
    from kb.errors import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'kb\[finetune\]'"):
        _backend(glm, lora.out)
