"""The real chain: packaged MiniLM embedder + packaged SmolLM2-135M GGUF over the sample documents."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")


def test_embedded_model_answers_an_english_question_citing_the_right_file(open_kb):
    kb = open_kb(backend="gguf", n_ctx=2048, answer_tokens=96)
    items = list(kb.stream("How long are hourly snapshots kept?"))
    answer = items[-1]
    assert answer.status == "answered" and answer.backend == "gguf"
    assert "".join(items[:-1]).strip()  # streamed text came before the Answer
    assert answer.prompt_tokens + 96 <= kb.backend().context_window == 2048
    assert answer.passages[0].path.endswith("backup-policy.html")
    # the answer's sentences are tied to a passage of the right file (by marker, or by kb's attribution)
    assert any(c.path.endswith("backup-policy.html") for c in answer.citations)
    assert all(c.n in {p.n for p in answer.passages} for c in answer.citations)
    assert answer.timings.first_token is not None and answer.timings.first_token <= answer.timings.total


def test_embedded_model_is_not_called_for_an_unrelated_question(open_kb):
    kb = open_kb(backend="gguf", n_ctx=2048)
    answer = kb.ask("What is the airspeed velocity of an unladen swallow?")
    assert answer.status == "refused" and answer.timings.first_token is None
