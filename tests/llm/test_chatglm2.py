"""ChatGLM2 on GlmForCausalLM: conversion, the math against a direct reference, generation."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import chatglm2_reference as ref  # noqa: E402
from thudm_fixtures import TINY  # noqa: E402

from kb.errors import ModelError  # noqa: E402
from kb.llm.base import Message  # noqa: E402
from kb.llm.chatglm2 import ChatGLM2Backend  # noqa: E402
from kb.llm.chatglm2_convert import MANIFEST, convert, is_converted, source_key  # noqa: E402
from kb.llm.generation import generate_ids, new_cache, prefill  # noqa: E402

IDS = [5, 17, 250, 3, 99, 42, 7, 300, 11, 64, 128, 1, 77, 200, 31, 150, 8, 19, 260, 45, 6, 90, 111, 222,
       333, 12, 13, 14, 120, 240, 360, 9, 100, 101, 102, 103, 55, 66, 88, 99]


@pytest.fixture(scope="module")
def glm_dir(thudm_bin, tmp_path_factory):
    return convert(thudm_bin, tmp_path_factory.mktemp("conv") / "glm")


@pytest.fixture(scope="module")
def glm32_dir(thudm_32k, tmp_path_factory):
    return convert(thudm_32k, tmp_path_factory.mktemp("conv") / "glm32")


@pytest.fixture(scope="module")
def backend(thudm_bin, tmp_path_factory):
    return ChatGLM2Backend.from_folder(thudm_bin, device="cpu", cache_dir=tmp_path_factory.mktemp("c") / "g",
                                       temperature=0, prefill_chunk=8)


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].double()


def test_converted_shapes_config_and_parameter_count(glm_dir, thudm_bin):
    from transformers import GlmForCausalLM

    model = GlmForCausalLM.from_pretrained(str(glm_dir))
    _, thudm = ref.load_thudm(thudm_bin)
    expected = sum(t.numel() for n, t in thudm.items() if not n.endswith("inv_freq"))
    assert model.num_parameters() == expected
    attn = model.model.layers[1].self_attn
    assert attn.q_proj.weight.shape == (64, 64) and attn.q_proj.bias.shape == (64,)
    assert attn.k_proj.weight.shape == (32, 64) and attn.v_proj.bias.shape == (32,)
    assert model.model.layers[0].mlp.gate_up_proj.weight.shape == (2 * TINY["ffn_hidden_size"], 64)
    assert model.lm_head.weight.shape == (TINY["padded_vocab_size"], 64)
    c = model.config
    assert (c.num_key_value_heads, c.head_dim, c.rms_norm_eps, c.eos_token_id, c.pad_token_id) == (2, 16, 1e-5, 2, 0)
    assert c.rope_parameters["partial_rotary_factor"] == 0.5 and c.rope_parameters["rope_type"] == "default"
    assert json.loads((glm_dir / MANIFEST).read_text())["format_version"] == 1


def test_logits_match_reference_math(glm_dir, thudm_bin):
    from transformers import GlmForCausalLM

    model = GlmForCausalLM.from_pretrained(str(glm_dir), dtype=torch.float32).eval()
    got, want = _logits(model, IDS), ref.logits(thudm_bin, IDS)
    assert want.abs().max() > 1.0  # the check is not comparing near-zero numbers
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_32k_is_linear_rope_interpolation(glm32_dir, thudm_32k):
    from transformers import GlmConfig, GlmForCausalLM

    cfg = GlmConfig.from_pretrained(str(glm32_dir))
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.rope_parameters["factor"] == 16
    model = GlmForCausalLM.from_pretrained(str(glm32_dir), dtype=torch.float32).eval()
    linear = ref.logits(thudm_32k, IDS, rope_mode="linear")
    base16 = ref.logits(thudm_32k, IDS, rope_mode="base")
    got = _logits(model, IDS)
    torch.testing.assert_close(got, linear, atol=1e-4, rtol=1e-4)
    assert (linear - base16).abs().max() > 1e-2  # the two readings of rope_ratio really differ
    # A conversion that multiplied the base instead would match the other reference.
    wrong = GlmConfig.from_pretrained(str(glm32_dir))
    wrong.rope_parameters = {"rope_type": "default", "rope_theta": 160000.0, "partial_rotary_factor": 0.5}
    wrong_model = GlmForCausalLM.from_pretrained(str(glm32_dir), config=wrong, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(wrong_model, IDS), base16, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_equals_one_pass(glm_dir):
    from transformers import GlmForCausalLM

    model = GlmForCausalLM.from_pretrained(str(glm_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        whole = prefill(model, IDS, new_cache(model))
        chunked = prefill(model, IDS, new_cache(model), chunk=7)
    torch.testing.assert_close(chunked.double(), _logits(model, IDS)[-1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)


def test_greedy_loop_matches_transformers_generate(backend):
    """Our token loop (chunked prefill, own cache handling) picks the same ids as model.generate."""
    ids = IDS[:12]
    mine = list(generate_ids(backend.model, ids, max_new_tokens=10, eos_ids={2}, prefill_chunk=5))
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                     eos_token_id=2, pad_token_id=0)
    theirs = out[0, len(ids):].tolist()
    theirs = theirs[: theirs.index(2)] if 2 in theirs else theirs
    assert len(mine) > 0 and mine == theirs


def test_generation_is_deterministic_and_streams_the_same_text(backend):
    q = [Message("system", "Answer briefly."), Message("user", "你好")]
    first = backend.generate(q, max_new_tokens=12)
    assert first == backend.generate(q, max_new_tokens=12)
    pieces = list(backend.stream(q, max_new_tokens=12))
    assert len(pieces) > 1 and "".join(pieces) == first


def test_generation_stops_at_eos(thudm_bin, tmp_path):
    """Make eos the greedy choice where a later token would be chosen: output stops right there."""
    import thudm_fixtures as fx

    base = ChatGLM2Backend.from_folder(thudm_bin, device="cpu", cache_dir=tmp_path / "a", temperature=0)
    prompt = base.prompt_ids([Message("user", "hello")])
    original = list(generate_ids(base.model, prompt, max_new_tokens=10))
    assert 2 not in original and len(original) == 10
    cfg = fx.thudm_config()
    sd = fx.thudm_state_dict(cfg)
    w = sd["transformer.output_layer.weight"]
    w[2] = w[original[5]] * 1.5  # eos now outscores token original[5] wherever that one leads
    folder = fx.write_checkpoint(tmp_path / "eos-ckpt", cfg, sd, "bin", thudm_bin / "tokenizer.model")
    eos = ChatGLM2Backend.from_folder(folder, device="cpu", cache_dir=tmp_path / "b", temperature=0)
    out = list(generate_ids(eos.model, prompt, max_new_tokens=10, eos_ids={2}))
    assert len(out) <= 5 and out == original[: len(out)]
    with torch.inference_mode():
        nxt = eos.model(input_ids=torch.tensor([prompt + out])).logits[0, -1].argmax()
    assert int(nxt) == 2  # it stopped exactly because eos was the next pick
    text = eos.generate([Message("user", "hello")], max_new_tokens=10)
    assert text == eos.tokenizer.decode(out)


def test_conversion_cache_is_reused_and_refreshed(thudm_bin, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(thudm_bin, src)
    cache = tmp_path / "cache"
    ChatGLM2Backend.from_folder(src, device="cpu", cache_dir=cache)
    stamp = (cache / MANIFEST).stat().st_mtime_ns
    ChatGLM2Backend.from_folder(src, device="cpu", cache_dir=cache)
    assert (cache / MANIFEST).stat().st_mtime_ns == stamp  # no second conversion
    shard = next(src.glob("*.bin"))
    shard.write_bytes(shard.read_bytes())  # touched: new mtime
    assert not is_converted(cache, source_key(src))
    ChatGLM2Backend.from_folder(src, device="cpu", cache_dir=cache)
    assert is_converted(cache, source_key(src))


def test_clear_errors(thudm_bin, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ChatGLM2Backend.from_folder(tmp_path / "nope", device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(thudm_bin, broken)
    next(broken.glob("*00002.bin")).unlink()
    with pytest.raises(ModelError, match="missing .* parameters"):
        convert(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        ChatGLM2Backend.from_folder(thudm_bin, device="cpu", quantize="4", cache_dir=tmp_path / "c")
    gen1 = tmp_path / "chatglm-6b"
    gen1.mkdir()
    (gen1 / "config.json").write_text(json.dumps({"model_type": "chatglm", "position_encoding_2d": True}))
    with pytest.raises(ModelError, match="first-generation ChatGLM-6B"):
        ChatGLM2Backend.from_folder(gen1, device="cpu", cache_dir=tmp_path / "d")


def test_context_window_and_token_counts(backend):
    msgs = [Message("user", "What is a knowledge base?")]
    assert backend.context_window == 512  # the tiny config's seq_length, under the 8K dialogue cap
    assert backend.count_message_tokens(msgs) == len(backend.prompt_ids(msgs))
    assert backend.count_message_tokens(msgs) > backend.count_tokens("What is a knowledge base?") + 5
    with pytest.raises(ModelError, match="context window"):
        backend.generate([Message("user", "word " * 600)])


def test_not_enough_gpu_memory_is_refused_before_loading(monkeypatch):
    """A fake GPU with 3 GiB free: ChatGLM2-6B-32K at NF4 and 32K context needs about 5 GB."""
    from transformers import GlmConfig

    from kb.llm.chatglm2_convert import glm_config_dict
    from kb.llm.torch_load import Placement, check_fits

    full = {"padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696, "num_layers": 28,
            "num_attention_heads": 32, "multi_query_group_num": 2, "kv_channels": 128, "seq_length": 32768,
            "rope_ratio": 16}
    config = GlmConfig(**glm_config_dict(full))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 1024**3, 80 * 1024**3))
    with pytest.raises(ModelError, match=r"needs about 5\.\d GiB of GPU memory, but cuda:0 has 3\.0 GiB free"):
        check_fits(config, Placement("cuda:0", "bfloat16", "4"), 32768, "ChatGLM2")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * 1024**3, 80 * 1024**3))
    check_fits(config, Placement("cuda:0", "bfloat16", "4"), 32768, "ChatGLM2")  # fits in 6 GiB
    with pytest.raises(ModelError, match="try llm.transformers.quantize: 4"):
        check_fits(config, Placement("cuda:0", "bfloat16", "none"), 32768, "ChatGLM2")


def test_missing_tokenizer_is_named(thudm_bin, tmp_path):
    src = tmp_path / "no-tok"
    shutil.copytree(thudm_bin, src)
    (src / "tokenizer.model").unlink()
    with pytest.raises(ModelError, match="has no tokenizer.model"):
        ChatGLM2Backend.from_folder(src, device="cpu", cache_dir=tmp_path / "c")


def test_sampling_respects_temperature_and_top_p():
    from kb.llm.generation import pick_token

    logits = torch.tensor([[0.0, 3.0, 2.9, -5.0]])
    assert pick_token(logits, 0.0, 1.0) == 1
    assert {pick_token(logits, 1.0, 0.01) for _ in range(20)} == {1}  # nucleus holds only the top token
    g = torch.Generator().manual_seed(0)
    draws = {pick_token(logits, 1.0, 0.9, g) for _ in range(200)}
    assert draws == {1, 2}  # the two likely tokens; never the tails outside the 0.9 nucleus


def test_legacy_bin_shards_are_read_without_mmap(tmp_path):
    from kb.llm.chatglm2_convert import iter_shard

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)  # pre-zip format
    (name, tensor), = list(iter_shard(path))
    assert name == "w" and tensor.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_conversion_falls_back_to_kb_home_models(settings, tmp_path, monkeypatch):
    """Next to an unwritable THUDM folder there is no room: the converted copy goes to $KB_HOME/models."""
    import kb.llm.chatglm2 as glm2
    import kb.llm.chatglm2_convert as convert_module
    from kb.config import LLMSettings

    src = tmp_path / "ro" / "chatglm2-6b"
    src.mkdir(parents=True)
    monkeypatch.setattr(convert_module.os, "access", lambda path, mode: False)  # root may write anywhere
    seen = []

    def record(folder, cache_dir):
        seen.append(cache_dir)
        raise ModelError("stop here")

    monkeypatch.setattr(glm2, "ensure_converted", record)
    with pytest.raises(ModelError, match="stop here"):
        glm2.from_settings(LLMSettings(backend="chatglm2", model=str(src), transformers={"device": "cpu"}))
    assert seen == [settings.home_dir / "models" / "chatglm2-6b-kb-glm"]
