"""Start-up: the chat model and the embedder load beside the question's retrieval, the Answer says how long
loading took, a failed load is reported as before, and `kb ask` never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from kb.answer.loading import Loader
from kb.errors import ModelError

Q = "How long are hourly snapshots kept?"


def test_the_first_answer_counts_the_model_load_and_later_ones_do_not(open_kb):
    kb = open_kb(["Two days [1]."])
    first = kb.ask(Q)
    assert first.status == "answered" and first.citations[0].path.endswith("backup-policy.html")
    assert first.timings.load_model > 0  # the scripted model loaded during this call
    assert 0 < first.timings.first_token <= first.timings.total
    again = kb.ask(Q)
    assert again.timings.load_model == 0 and again.timings.load_embedder == 0
    assert kb.backend() is kb.backend()  # loaded once, kept by the KB


def test_a_model_that_cannot_load_fails_the_question_with_its_own_error(open_kb, tmp_path):
    kb = open_kb(backend="gguf")
    kb.settings.llm = kb.settings.llm.model_copy(update={"model": str(tmp_path / "missing.gguf")})
    with pytest.raises(ModelError, match="missing.gguf"):
        kb.ask(Q)
    with pytest.raises(ModelError, match="missing.gguf"):  # tried again, not a remembered failure
        kb.ask(Q)


def test_loader_runs_once_in_the_background_and_retries_a_failure():
    calls = []
    release = threading.Event()

    def load():
        calls.append(threading.current_thread().name)
        release.wait(5)
        if len(calls) == 1:
            raise ModelError("first load fails")
        return "model"

    loader = Loader(load)
    future = loader.start()
    assert loader.start() is future and not loader.loaded  # one load at a time
    release.set()
    with pytest.raises(ModelError):
        loader.get()
    assert loader.get() == "model" and loader.loaded and loader.get() == "model"
    assert len(calls) == 2 and all(name.startswith("kb-load") for name in calls)
    began, ended = loader.interval
    assert ended is not None and ended >= began


def test_a_quoted_answer_never_loads_the_model(open_kb):
    kb = open_kb(["never written"])
    model = Loader(lambda: pytest.fail("the model was loaded for an extracted answer"))
    answer = kb.ask(Q, answer_mode="extract", backend=model)
    assert answer.answer_mode == "extract" and answer.citations
    assert model.interval is None and not model.loaded


def test_the_configured_embedder_and_the_kbs_share_one_loaded_model(open_kb):
    from kb.ingest.embed import get_embedder

    kb = open_kb()
    configured = get_embedder(kb.settings.embedding, kb.settings.models_dir)  # prefixes unset, as `kb serve` builds it
    own = kb.embedder()  # prefixes from the KB's manifest
    assert own.query_prefix == "query: " and own._onnx is configured._onnx
    began, ended = own.loaded
    assert ended >= began


def test_kb_ask_imports_no_torch_and_reports_its_start_up(sample_home, tmp_path):
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps(["Two days [1]."]))
    env = {**os.environ, "KB_HOME": str(sample_home), "KB_LLM__BACKEND": "scripted", "KB_LLM__MODEL": str(replies)}
    code = ("import atexit, sys\n"
            "heavy = ('torch', 'transformers', 'sentence_transformers', 'unstructured')\n"
            "atexit.register(lambda: print('HEAVY', [m for m in heavy if m in sys.modules], file=sys.stderr))\n"
            "sys.argv = ['kb', *sys.argv[1:]]\n"
            "from kb.cli import main\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, "ask", Q, "--kb", "samples", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr
    timings = json.loads(done.stdout)["timings"]
    assert 0 < timings["imports"] < 60 and timings["load_model"] > 0
