"""ChatGLM2 tokenizer rules and prompt format; known answers for the real tokenizer.model."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("sentencepiece")

from kb.errors import ModelError  # noqa: E402
from kb.llm.base import Message  # noqa: E402
from kb.llm.chatglm2_tokenizer import ChatGLM2Tokenizer, build_prompt  # noqa: E402

REAL = os.environ.get("KB_CHATGLM2_TOKENIZER", "")


def test_specials_follow_the_pieces(sp_model):
    tok = ChatGLM2Tokenizer(sp_model)
    n = tok.sp.vocab_size()
    assert tok.special_ids == {"[MASK]": n, "[gMASK]": n + 1, "[sMASK]": n + 2, "sop": n + 3, "eop": n + 4}
    assert tok.vocab_size == n + 5 and tok.eos_id == 2 and tok.pad_id == 0
    ids = tok.encode_prompt("hello world")
    assert ids[:2] == [n + 1, n + 3] and 1 not in ids  # [gMASK] sop, and no BOS
    assert tok.decode(ids) == "[gMASK]sophello world"
    assert tok.decode(tok.encode("知识库回答问题")) == "知识库回答问题"


def test_prompt_rounds_history_and_system():
    msgs = [Message("system", "Use the passages."), Message("user", "Q1"), Message("assistant", "A1"),
            Message("user", "Q2")]
    assert build_prompt(msgs) == "[Round 1]\n\n问：Use the passages.\n\nQ1\n\n答：A1\n\n[Round 2]\n\n问：Q2\n\n答："
    assert build_prompt([Message("user", "你好")]) == "[Round 1]\n\n问：你好\n\n答："
    with pytest.raises(ModelError, match="last message"):
        build_prompt([Message("user", "q"), Message("assistant", "a")])
    with pytest.raises(ModelError, match="role"):
        Message("tool", "x")  # type: ignore[arg-type]


@pytest.mark.skipif(not REAL, reason="set KB_CHATGLM2_TOKENIZER to THUDM's tokenizer.model to check known answers")
def test_known_answers_of_the_real_tokenizer():
    tok = ChatGLM2Tokenizer(REAL)
    assert tok.n_pieces == 64789 and tok.special_ids["[gMASK]"] == 64790 and tok.special_ids["sop"] == 64792
    assert tok.encode_prompt("你好") == [64790, 64792, 36474, 54591]
    assert tok.encode_prompt(build_prompt([Message("user", "你好")])) == [
        64790, 64792, 790, 30951, 517, 30910, 30939, 30996, 13, 13, 54761, 31211, 39701, 13, 13, 55437, 31211]
