"""The official `openai` client, unchanged, against `kb serve` on loopback: models, answers, streaming,
the citations extra field, and errors it can show."""

from __future__ import annotations

import openai
import pytest
from serverkit import KEY, REPLY

Q = "How long are hourly snapshots kept?"


@pytest.fixture
def oai(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def test_models_list_the_knowledge_bases(oai):
    ids = [m.id for m in oai.models.list()]
    assert "kb:samples" in ids
    assert oai.models.retrieve("kb:samples").id == "kb:samples"


def test_chat_completion_answers_with_citations_in_an_extra_field(oai):
    done = oai.chat.completions.create(model="kb:samples", messages=[{"role": "user", "content": Q}])
    assert done.object == "chat.completion" and done.model == "kb:samples"
    assert done.choices[0].message.content == REPLY
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens > 0
    extra = done.model_extra
    assert extra["kb_status"] == "answered"
    [cite] = extra["citations"]
    assert cite["n"] == 1 and cite["path"].endswith("backup-policy.html")
    assert "hourly snapshots" in cite["text"] and cite["section"].startswith("Backup policy")


def test_streamed_chat_completion_gives_the_same_answer_in_chunks(oai):
    stream = oai.chat.completions.create(model="kb:samples", messages=[{"role": "user", "content": Q}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # really streamed
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["citations"][0]["path"].endswith("backup-policy.html")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_follow_up_uses_the_history(oai, base_url):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": Q},
                {"role": "assistant", "content": REPLY}, {"role": "user", "content": "and the weekly ones?"}]
    done = oai.chat.completions.create(model="samples", messages=messages)  # a bare KB name works too
    assert done.model == "kb:samples"
    assert done.model_extra["kb_status"] in ("answered", "refused", "not_found")


def test_unknown_model_is_a_404_the_client_can_show(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": Q}])
    assert "unknown model 'kb:nope'" in str(e.value) and "kb:samples" in str(e.value)


def test_wrong_key_is_an_authentication_error(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as e:
            client.models.list()
    assert "API key" in str(e.value)


def test_empty_question_is_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="kb:samples", messages=[{"role": "user", "content": "   "}])
    assert "question is empty" in str(e.value)
