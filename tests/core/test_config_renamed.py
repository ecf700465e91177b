"""Settings that moved: the llm section grouped by the backend it serves, answer.passages and answer.min_score
now retrieval.k and retrieval.threshold; the old names still read, with one notice each."""

from __future__ import annotations

import yaml

import kb.config.renamed as renamed
from kb.config import LLMSettings, load_settings, save_settings


def _fresh_notices(monkeypatch) -> None:
    monkeypatch.setattr(renamed, "_told", set())  # each test sees the once-per-process notice


def test_flat_names_from_file_env_and_python_land_in_their_groups(settings, tmp_path, monkeypatch, capsys):
    _fresh_notices(monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"llm": {"base_url": "http://file/v1", "dtype": "float32",
                                              "openai": {"api_key": "grouped-key"}}}), encoding="utf-8")
    monkeypatch.setenv("KB_CONFIG", str(config))
    monkeypatch.setenv("KB_LLM__REPEAT_PENALTY", "1.2")
    s = load_settings()
    assert s.llm.openai.base_url == "http://file/v1" and s.llm.openai.api_key == "grouped-key"
    assert s.llm.transformers.dtype == "float32" and s.llm.gguf.repeat_penalty == 1.2
    assert s.llm.base_url == "http://file/v1" and s.llm.dtype == "float32"  # old attribute names still read
    py = LLMSettings(cache_dir="/c", trust_remote_code=True, prefill_chunk=8, no_repeat_ngram=0, api_key="k")
    assert (py.chatglm2.cache_dir, py.hf.trust_remote_code, py.transformers.prefill_chunk) == ("/c", True, 8)
    assert py.gguf.no_repeat_ngram == 0 and py.openai.api_key == "k"
    lines = capsys.readouterr().err.splitlines()
    assert "kb: setting llm.base_url is now llm.openai.base_url; the old name still works" in lines
    assert len([x for x in lines if "llm.dtype is now" in x]) == 1  # once per name and process
    LLMSettings(base_url="http://again/v1")
    assert "llm.base_url" not in capsys.readouterr().err
    copied = py.model_copy(update={"no_repeat_ngram": 3, "model": "m"})  # code written for the flat names
    assert copied.gguf.no_repeat_ngram == 3 and copied.model == "m" and copied.openai.api_key == "k"


def test_a_flat_override_wins_over_the_files_group(settings, tmp_path, monkeypatch):
    _fresh_notices(monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"llm": {"openai": {"base_url": "http://file/v1"}}}), encoding="utf-8")
    monkeypatch.setenv("KB_CONFIG", str(config))
    monkeypatch.setenv("KB_LLM__BASE_URL", "http://env/v1")
    assert load_settings().llm.openai.base_url == "http://env/v1"


def test_dump_and_save_write_only_the_grouped_form(settings, tmp_path, monkeypatch):
    _fresh_notices(monkeypatch)
    dump = LLMSettings(base_url="http://h/v1", repeat_penalty=1.1).model_dump()
    assert dump["openai"]["base_url"] == "http://h/v1" and dump["gguf"]["repeat_penalty"] == 1.1
    assert not {"base_url", "repeat_penalty", "dtype", "cache_dir"} & dump.keys()
    path = save_settings(load_settings(llm={"base_url": "http://h/v1", "model": "m"}), tmp_path / "out.yaml")
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["llm"] == {"model": "m",
                                                                       "openai": {"base_url": "http://h/v1"}}
    monkeypatch.setenv("KB_CONFIG", str(path))
    assert load_settings().llm.openai.base_url == "http://h/v1"  # what was saved reads back


def test_max_new_tokens_says_where_it_applies():
    text = LLMSettings.model_fields["max_new_tokens"].description
    assert "answer.answer_tokens" in text and "kb model chat" in text
    for name in ("gguf", "transformers", "chatglm2", "hf", "openai"):  # every group says which backend it serves
        assert LLMSettings.model_fields[name].description


def test_answer_passages_and_min_score_are_read_as_retrieval_k_and_threshold(settings, tmp_path, monkeypatch, capsys):
    _fresh_notices(monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"answer": {"passages": 3, "min_score": 0.25}, "retrieval": {"k": 9}}),
                      encoding="utf-8")
    monkeypatch.setenv("KB_CONFIG", str(config))
    s = load_settings()
    assert (s.retrieval.k, s.retrieval.threshold) == (3, 0.25)  # the old name wins, as for llm's flat names
    lines = capsys.readouterr().err.splitlines()
    assert "kb: setting answer.passages is now retrieval.k; the old name still works" in lines
    assert "kb: setting answer.min_score is now retrieval.threshold; the old name still works" in lines
    path = save_settings(s, tmp_path / "out.yaml")
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert saved["retrieval"] == {"k": 3, "threshold": 0.25} and "answer" not in saved  # written under the new names
    monkeypatch.setenv("KB_ANSWER__PASSAGES", "4")
    monkeypatch.setenv("KB_CONFIG", str(path))
    assert load_settings().retrieval.k == 4 and load_settings().retrieval.threshold == 0.25
    assert load_settings(retrieval={"k": 2}).retrieval.k == 4  # the environment's old name over a keyword's new one


def test_one_table_moves_every_renamed_setting_from_any_source(settings, monkeypatch, capsys):
    from kb.config import AnswerSettings
    from kb.config.renamed import RENAMED

    assert RENAMED["answer.passages"] == "retrieval.k" and RENAMED["llm.base_url"] == "llm.openai.base_url"
    _fresh_notices(monkeypatch)
    monkeypatch.setenv("KB_ANSWER__PASSAGES", "4")
    assert load_settings().retrieval.k == 4  # an environment variable under the old name still applies
    assert "kb: setting answer.passages is now retrieval.k" in capsys.readouterr().err
    monkeypatch.delenv("KB_ANSWER__PASSAGES")
    monkeypatch.setenv("KB_LLM__QUANTIZE", "4")  # llm.quantize, read by the transformers backends only
    moved = load_settings().llm
    assert moved.transformers.quantize == "4" and moved.quantize == "4" and "quantize" not in moved.model_dump()
    assert "kb: setting llm.quantize is now llm.transformers.quantize" in capsys.readouterr().err
    assert LLMSettings(device="cpu").transformers.device == "cpu"
    monkeypatch.delenv("KB_LLM__QUANTIZE")
    s = load_settings(answer=AnswerSettings(min_score=0.5))  # a section given whole, old field set
    assert s.retrieval.threshold == 0.5 and s.answer.min_score is None
    assert "kb: setting answer.min_score is now retrieval.threshold" in capsys.readouterr().err
