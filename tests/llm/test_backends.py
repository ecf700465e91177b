"""The backend registry, the scripted backend, the LangChain adapter and missing-package messages."""

from __future__ import annotations

import json
import sys

import pytest

from kb.config import LLMSettings
from kb.errors import ConfigError, MissingDependencyError, ModelError
from kb.llm.base import ChatBackend, Message, backend_names, load_backend, register_backend
from kb.llm.generation import stream_text
from kb.llm.scripted import ScriptedBackend

Q = [Message("system", "Cite sources."), Message("user", "What does the report say about 差旅?")]


def test_builtin_names_and_unknown_backend():
    assert {"gguf", "chatglm2", "hf", "openai", "scripted"} <= set(backend_names())
    with pytest.raises(ConfigError, match="'nope' is not a known model backend"):
        load_backend(LLMSettings(backend="nope"))


def test_registered_backend_is_chosen_by_settings():
    register_backend("canned", lambda s: ScriptedBackend([f"answer from {s.model}"]))
    backend = load_backend(LLMSettings(backend="canned", model="m1"))
    assert backend.generate(Q) == "answer from m1"


def test_scripted_replies_in_order_then_echo(tmp_path):
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(["first answer [1]", "second answer"]))
    backend = load_backend(LLMSettings(backend="scripted", model=str(script)))
    assert backend.generate(Q) == "first answer [1]"
    assert list(backend.stream(Q)) == ["second ", "answer"]
    assert backend.generate(Q, stop=["ans"]) == "second "
    assert backend.calls[0] == Q
    echo = load_backend(LLMSettings(backend="scripted"))
    assert echo.generate(Q) == "You asked: What does the report say about 差旅?"
    assert echo.count_tokens("two words 差旅") == 4
    script.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON file holding a list of replies"):
        load_backend(LLMSettings(backend="scripted", model=str(script)))


def test_messages_are_checked():
    backend = ScriptedBackend()
    with pytest.raises(ModelError, match="no messages"):
        backend.generate([])
    with pytest.raises(ModelError, match="last message must come from the user"):
        backend.generate([Message("user", "q"), Message("assistant", "a")])


def test_langchain_adapter_streams_and_counts():
    pytest.importorskip("langchain_core")
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.prompts import ChatPromptTemplate

    from kb.llm.langchain_adapter import as_chat_model

    backend = ScriptedBackend(["Paris is the capital [1]."])
    model = as_chat_model(backend)
    chain = ChatPromptTemplate.from_messages([("system", "Answer from {ctx}"), ("human", "{q}")]) | model
    assert chain.invoke({"ctx": "doc", "q": "capital?"}).content == "Paris is the capital [1]."
    assert backend.calls[-1] == [Message("system", "Answer from doc"), Message("user", "capital?")]
    pieces = [c.content for c in model.stream([SystemMessage("s"), HumanMessage("q")]) if c.content]
    assert pieces == ["Paris ", "is ", "the ", "capital ", "[1]."]
    assert model.get_num_tokens("a b c") == 3


def test_stream_text_holds_back_stop_prefixes_and_partial_characters():
    table = {1: "Hel", 2: "lo", 3: " Obs", 4: "erva", 5: "tion: x"}
    pieces = list(stream_text(iter([1, 2, 3, 4, 5]), lambda ids: "".join(table[i] for i in ids), ["Observation:"]))
    assert "".join(pieces) == "Hello "
    utf8 = "知".encode()
    parts = {1: utf8[:2], 2: utf8[2:]}
    out = list(stream_text(iter([1, 2]), lambda ids: b"".join(parts[i] for i in ids).decode(errors="replace")))
    assert out == ["知"]  # never a replacement character half-way


@pytest.mark.parametrize(
    ("backend", "module", "package", "extra"),
    [("gguf", "llama_cpp", "llama-cpp-python", "local"), ("openai", "langchain_openai", "langchain-openai", "openai")],
)
def test_missing_package_names_the_extra(monkeypatch, backend, module, package, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    settings = LLMSettings(backend=backend, model="x.gguf" if backend == "gguf" else "m",
                           openai={"base_url": "http://h/v1"})
    with pytest.raises(MissingDependencyError, match=rf"needs the Python package '{package}'.*kb\[{extra}\]"):
        load_backend(settings)


def test_backend_interface_defaults():
    class Tiny(ChatBackend):
        def stream(self, messages, **gen):
            yield "ok"

        def count_tokens(self, text):
            return len(text.split())

    t = Tiny()
    assert t.generate(Q) == "ok" and t.count_message_tokens(Q) > t.count_tokens(Q[1].content)


def test_auto_backend_follows_the_model_setting(tmp_path):
    from kb.llm.base import resolve_backend_name

    def name(**kw):
        return resolve_backend_name(LLMSettings(**kw))

    assert LLMSettings().backend == "auto"
    assert name() == "gguf" and name(model="~/m/smol.gguf") == "gguf"
    assert name(model="chatglm2-6b", openai={"base_url": "http://localhost:8000/v1"}) == "openai"
    thudm, other = tmp_path / "chatglm2-6b-32k", tmp_path / "qwen"
    for folder, cfg in ((thudm, {"model_type": "chatglm", "rope_ratio": 16}), (other, {"model_type": "qwen2"})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
    assert name(model=str(thudm)) == "chatglm2" and name(model=str(other)) == "hf"
    assert name(backend="scripted", model=str(other)) == "scripted"
    with pytest.raises(ConfigError, match="neither a .gguf file nor a model folder"):
        name(model=str(tmp_path / "typo"))


def test_the_core_asks_what_a_backend_declares_not_its_name():
    from kb.answer.rewrite import choose_mode
    from kb.config import AnswerSettings
    from kb.llm.shared import SharedBackend

    class Tiny(ScriptedBackend):
        name = "tiny-local"
        parameters = 135_000_000  # a small model: rewrites by the rule, short budgets (kb.answer.chain)

    class Big(ScriptedBackend):
        name = "scripted"  # a name the core once checked: what counts is what the backend declares
        rewrites_queries = True

    auto = AnswerSettings(rewrite="auto")
    assert Tiny().small and not Tiny().rewrites_queries and choose_mode(auto, Tiny()) == "rule"
    assert not Big().small and choose_mode(auto, Big()) == "model"
    assert choose_mode(auto, ScriptedBackend()) == "rule" and choose_mode(auto, None) == "rule"
    shared = SharedBackend(Tiny())
    assert shared.small and choose_mode(auto, shared) == "rule" and not shared.parallel_safe
    assert choose_mode(auto, SharedBackend(Big())) == "model"


def test_unset_sampling_values_come_from_the_backends_defaults():
    from kb.llm.base import Sampling

    class Echo(ChatBackend):
        sampling = Sampling(max_new_tokens=7, temperature=0.3, top_p=0.9)

        def stream(self, messages, *, max_new_tokens=None, temperature=None, top_p=None, stop=None):
            gen = self.prepare(messages, max_new_tokens, temperature, top_p)
            yield f"{gen.max_new_tokens} {gen.temperature} {gen.top_p}"

        def count_tokens(self, text):
            return len(text.split())

    assert Echo().generate(Q) == "7 0.3 0.9" and Echo().generate(Q, temperature=0, max_new_tokens=2) == "2 0 0.9"
    with pytest.raises(ModelError, match="last message must come from the user"):
        Echo().generate([Message("user", "q"), Message("assistant", "a")])
