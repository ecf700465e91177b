"""GGUFBackend.warm: the prompt's fixed start is read ahead of time, and the answer is the same as without it."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")

from kb.config import LLMSettings  # noqa: E402
from kb.llm.base import Message, load_backend  # noqa: E402

SYSTEM = Message("system", "Answer the question using only the passage below, in one short sentence.")
FULL = [SYSTEM, Message("user", "Passage: Hourly snapshots are kept for two days.\n\n"
                                "Question: How long are hourly snapshots kept?")]


@pytest.fixture(scope="module")
def smol():
    return load_backend(LLMSettings(backend="gguf", temperature=0, n_ctx=2048))


def test_warm_reads_the_start_of_the_prompt_and_changes_no_answer(smol):
    smol.llm.reset()
    cold = "".join(smol.stream(FULL, max_new_tokens=16))
    smol.llm.reset()
    smol.warm([SYSTEM, Message("user", "whatever the question will be")])
    head = smol.formatter(messages=smol._dicts(FULL)).prompt.split("Passage:")[0]
    read = smol.llm.tokenize(head.encode(), add_bos=False, special=True)
    assert smol.llm.n_tokens == len(read) and list(smol.llm.input_ids[:len(read)]) == read
    assert "".join(smol.stream(FULL, max_new_tokens=16)) == cold
    smol.warm([SYSTEM, Message("user", "again")])  # already read: nothing to do, the cache is kept
    assert smol.llm.n_tokens >= len(read)
