"""The real chain: packaged MiniLM embedder + packaged SmolLM2-135M GGUF over the sample documents."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")


def test_embedded_model_answers_an_english_question_citing_the_right_file(open_kb):
    kb = open_kb(backend="gguf", n_ctx=2048, answer_tokens=96, mode="generate")  # auto quotes for SmolLM2
    stream = kb.stream("How long are hourly snapshots kept?")
    streamed = "".join(stream)
    answer = stream.answer()
    assert answer.status == "answered" and answer.backend == "gguf"
    assert streamed.strip()  # streamed text came before the Answer
    assert answer.prompt_tokens + 96 <= kb.backend().context_window == 2048
    assert answer.passages[0].path.endswith("backup-policy.html")
    # the answer's sentences are tied to a passage of the right file (by marker, or by kb's attribution)
    assert any(c.path.endswith("backup-policy.html") for c in answer.citations)
    assert all(c.n in {p.n for p in answer.passages} for c in answer.citations)
    assert answer.timings.first_token is not None and answer.timings.first_token <= answer.timings.total


def test_the_loop_guard_stops_the_real_embedded_model_where_it_starts_repeating(open_kb):
    from kb.eval import repeats_a_sentence

    # Greedy SmolLM2-135M without the n-gram ban loops on 0.94 of the dev set's English questions, but which
    # ones varies with the prompt's bytes, and the prompt names each passage by its full path (pytest's
    # temporary folder): of three questions that loop on it, at least one does wherever the tests run.
    kb = open_kb(backend="gguf", n_ctx=2048, mode="generate")
    llm = kb.settings.llm
    kb.settings.llm = llm.model_copy(update={"gguf": llm.gguf.model_copy(update={"no_repeat_ngram": 0})})  # no help
    stopped = []
    for question in ("How do remote staff connect to the office network?", "Summarize the backup policy in detail.",
                     "What are the rules for guests on the Wi-Fi?"):
        answer = kb.ask(question)
        assert not repeats_a_sentence(answer.text), answer.text  # whatever it wrote, nothing shows twice
        if answer.repetition_stopped:
            stopped.append(answer)
    assert stopped  # the guard had to step in
    for answer in stopped:
        assert not answer.text.rstrip().endswith(".") or not answer.text.rstrip()[-2].isdigit()  # no dangling "4."
        assert answer.timings.generate < 30  # stopped early, not at the 384-token limit


def test_auto_quotes_for_the_small_embedded_model_without_calling_it(open_kb):
    kb = open_kb(backend="gguf", n_ctx=2048)
    answer = kb.ask("How long are hourly snapshots kept?")
    assert answer.answer_mode == "extract" and answer.backend == ""
    assert "two days" in answer.text or "2 days" in answer.text
    assert kb.backend().parameters < 200e6  # it was loaded (to learn its size), not asked


def test_packing_counts_what_llama_cpp_feeds_the_model(open_kb):
    from kb.answer.prompts import answer_messages

    kb = open_kb(backend="gguf", n_ctx=2048, mode="generate")  # auto would quote: SmolLM2 writes no Chinese
    answer = kb.ask("一线城市出差住宿每晚最多报销多少？")
    backend = kb.backend()
    messages = answer_messages(kb.settings.answer, answer.question, list(answer.passages), [], answer.language)
    usage = backend.llm.create_chat_completion(messages=backend._dicts(messages), max_tokens=1)["usage"]
    assert usage["prompt_tokens"] == answer.prompt_tokens


def test_embedded_model_is_not_called_for_an_unrelated_question(open_kb):
    kb = open_kb(backend="gguf", n_ctx=2048)
    answer = kb.ask("What is the airspeed velocity of an unladen swallow?")
    assert answer.status == "refused" and answer.timings.first_token is None


def test_ctrl_c_stops_kb_ask_cleanly(sample_home, settings):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "KB_HOME": str(sample_home), "KB_LLM__N_CTX": "2048", "PYTHONUNBUFFERED": "1",
           "KB_ANSWER__ANSWER_TOKENS": "400", "KB_ANSWER__MODE": "generate"}
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "ask", "Summarize the backup policy in detail.",
                             "--kb", "samples"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1)  # the answer has started streaming: stop it at once (the loop guard may end a
    proc.send_signal(signal.SIGINT)  # looping answer early; the signal needs no delay to land mid-answer)
    rest, errors = proc.communicate(timeout=120)
    assert proc.returncode == 130, errors.decode()
    assert b"stopped" in errors and b"Traceback" not in errors
