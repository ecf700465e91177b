"""Over HTTP the model sees earlier turns by the same rule as `kb chat` and the app (the answer service's
model_history): an earlier answer's [n] markers are removed, and a refused turn never reaches the model."""

from __future__ import annotations

import httpx
import pytest
from serverkit import KEY, REPLY, running, server_settings

from kb.answer.prompts import NOT_FOUND, REFUSAL
from kb.llm.shared import shared_backend

Q = "How long are they kept?"
EARLIER = [
    ("How long are hourly snapshots kept?", REPLY),  # answered, with its marker [1]
    ("What is the capital of France?", REFUSAL["en"]),  # refused: kb said it would not answer
    ("Who signs the zebra permits?", NOT_FOUND["en"]),  # not found in the passages
]


@pytest.fixture(scope="module")
def served(sample_home, tmp_path_factory):
    settings = server_settings(sample_home, tmp_path_factory.mktemp("history"),
                               answer={"rewrite": "model", "translate_query": "off"})
    with running(settings) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                                 timeout=60) as client:
        yield client, shared_backend(settings.llm).inner  # the one model the server answers with


def _seen(model, since: int) -> str:
    """Everything the model was sent since call `since` (rewrite prompt and answer prompt)."""
    return "\n".join(m.content for call in model.calls[since:] for m in call)


def _check(model, since: int) -> None:
    seen = _seen(model, since)
    assert "Hourly snapshots are kept for 48 hours" in seen  # the answered turn reaches the model...
    assert "48 hours [1]" not in seen and "48 hours." in seen  # ...without its marker
    assert "capital of France" not in seen and REFUSAL["en"][:40] not in seen  # the refused turn does not
    assert "zebra permits" not in seen  # nor the turn whose answer was not in the passages


def test_openai_chat_history_reaches_the_model_by_the_services_rule(served):
    client, model = served
    messages = []
    for question, answer in EARLIER:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    since = len(model.calls)
    r = client.post("/v1/chat/completions",
                    json={"model": "kb:samples", "messages": [*messages, {"role": "user", "content": Q}]})
    assert r.status_code == 200 and len(model.calls) > since
    _check(model, since)


def test_kb_ask_history_reaches_the_model_by_the_services_rule(served):
    client, model = served
    since = len(model.calls)
    history = [{"question": q, "answer": a} for q, a in EARLIER]
    r = client.post("/v1/kbs/samples/ask", json={"question": Q, "history": history})
    assert r.status_code == 200 and len(model.calls) > since
    _check(model, since)
