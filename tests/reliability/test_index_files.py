"""Index files that come from elsewhere (a KB folder copied from someone, a damaged disk): a clear
KBError that names the file, never a crash inside FAISS or SQLite, never code execution (no pickle)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from kbproc import kb_env, run_kb

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import EmbedderMismatchError, IndexFormatError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("origin")
    docs = home / "docs"
    docs.mkdir()
    for i, topic in enumerate(["granary", "aqueduct", "monastery"]):
        (docs / f"{topic}.md").write_text(f"# {topic}\n\nThe {topic} number {i} was restored in {1900 + i}.\n")
    with KnowledgeBase.open("src", settings=Settings(home=home)) as base:
        base.ingest(docs)
    return home


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the built KB: (home, kb folder)."""
    home = tmp_path / "home"
    shutil.copytree(built / "kbs", home / "kbs")
    return home, home / "kbs" / "src"


def _open_and_search(home: Path) -> None:
    with KnowledgeBase.open("src", settings=Settings(home=home), create=False) as base:
        base.search("granary restored", 2, mode="hybrid")


def _faiss_file(folder: Path) -> Path:
    (path,) = folder.glob("vectors-*.faiss")
    return path


MANIFEST_EDITS = {
    "not json": lambda m: "{ this is not json",
    "unknown version": lambda m: json.dumps({**m, "version": 99}),
    "no format tag": lambda m: json.dumps({k: v for k, v in m.items() if k != "format"}),
    "embedder not a dict": lambda m: json.dumps({**m, "embedder": "all-MiniLM-L6-v2"}),
    "wrong dimension": lambda m: json.dumps({**m, "embedder": {**m["embedder"], "dim": 768}}),
    "a list": lambda m: "[1, 2, 3]",
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS, ids=list(MANIFEST_EDITS))
def test_tampered_manifest_is_a_clear_error(copy, edit):
    home, folder = copy
    manifest = folder / "manifest.json"
    manifest.write_text(MANIFEST_EDITS[edit](json.loads(manifest.read_text())))
    with pytest.raises(IndexFormatError) as e:
        _open_and_search(home)
    assert str(folder) in str(e.value)


def test_manifest_naming_another_embedder_says_how_to_fix(copy):
    home, folder = copy
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "embedder": {**data["embedder"], "model": "bge-small-zh"}}))
    with pytest.raises(EmbedderMismatchError, match="--rebuild"):
        _open_and_search(home)


FAISS_EDITS = {
    "truncated to half": lambda b: b[: len(b) // 2],
    "truncated to 10 bytes": lambda b: b[:10],
    "empty": lambda b: b"",
    "random bytes": lambda b: bytes((i * 7919 + 13) % 256 for i in range(len(b))),
    "header kept, body garbage": lambda b: b[:8] + bytes(len(b) - 8),
    "a pickle": lambda b: b"\x80\x04\x95" + b"cos\nsystem\n(S'touch /tmp/kb-pwned'\ntR." + bytes(64),
}


@pytest.mark.parametrize("edit", FAISS_EDITS, ids=list(FAISS_EDITS))
def test_damaged_faiss_file_never_crashes(copy, edit):
    """The FAISS file is derived data: kb either rebuilds it from meta.sqlite or says which file is bad."""
    home, folder = copy
    path = _faiss_file(folder)
    path.write_bytes(FAISS_EDITS[edit](path.read_bytes()))
    try:
        with KnowledgeBase.open("src", settings=Settings(home=home), create=False) as base:
            hits = base.search("granary restored", 1, mode="dense")
        assert hits[0].path.endswith("granary.md")  # rebuilt from the truth: the answer is still right
    except IndexFormatError as e:
        assert path.name in str(e)
    assert not Path("/tmp/kb-pwned").exists()


def test_valid_faiss_file_with_other_vectors_is_not_trusted(copy):
    """A well-formed FAISS file of the right size whose vectors were swapped: kb answers from SQLite."""
    import faiss

    home, folder = copy
    path = _faiss_file(folder)
    real = faiss.read_index(str(path))
    fake = faiss.IndexIDMap2(faiss.IndexFlatIP(real.d))
    ids = faiss.vector_to_array(real.id_map)
    vectors = faiss.downcast_index(real.index).reconstruct_n(0, real.ntotal)
    fake.add_with_ids(-vectors, ids)  # every similarity flipped
    faiss.write_index(fake, str(path))
    with KnowledgeBase.open("src", settings=Settings(home=home), create=False) as base:
        assert base.search("granary restored", 1, mode="dense")[0].path.endswith("granary.md")


def test_truncated_faiss_file_through_the_cli(copy):
    home, folder = copy
    path = _faiss_file(folder)
    path.write_bytes(path.read_bytes()[:100])
    done, _ = run_kb(home, "search", "granary restored", "--kb", "src", "--mode", "dense", "--json")
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr, done.stderr[-2000:]
    if done.returncode == 0:
        assert json.loads(done.stdout)[0]["path"].endswith("granary.md")
    else:
        assert path.name in " ".join(done.stderr.split())


def test_sqlite_garbage_is_a_clear_error(copy):
    home, folder = copy
    (folder / "meta.sqlite").write_bytes(b"this is not a database at all" * 100)
    for side in folder.glob("meta.sqlite-*"):
        side.unlink()
    with pytest.raises(IndexFormatError, match="meta.sqlite"):
        _open_and_search(home)


def test_sqlite_truncated_is_a_clear_error(copy):
    home, folder = copy
    db = folder / "meta.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    db.write_bytes(db.read_bytes()[:5000])
    with pytest.raises(IndexFormatError, match="meta.sqlite"):
        _open_and_search(home)


def _sql(folder: Path, *statements: str) -> None:
    con = sqlite3.connect(folder / "meta.sqlite")
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def test_sqlite_wrong_schema_version_is_a_clear_error(copy):
    home, folder = copy
    _sql(folder, "UPDATE meta SET value='7' WHERE key='schema_version'")
    with pytest.raises(IndexFormatError, match=r"meta.sqlite has schema version 7"):
        _open_and_search(home)


def test_sqlite_with_foreign_tables_is_a_clear_error(copy):
    """Right version number, wrong tables (another program's database, or a hand edit)."""
    home, folder = copy
    _sql(folder, "ALTER TABLE chunks DROP COLUMN vector")
    with pytest.raises(IndexFormatError, match="meta.sqlite"):
        _open_and_search(home)


def test_sqlite_vector_of_the_wrong_size_is_a_clear_error(copy):
    home, folder = copy
    _sql(folder, "UPDATE chunks SET vector = x'0000803f' WHERE rowid = (SELECT MIN(rowid) FROM chunks)")
    for path in folder.glob("vectors-*.faiss"):
        path.unlink()
    with pytest.raises(IndexFormatError, match="meta.sqlite"):
        with KnowledgeBase.open("src", settings=Settings(home=home), create=False) as base:
            base.search("granary restored", 1, mode="dense")


# -- no code execution: nothing in the load path unpickles ------------------------------------------
_UNSAFE = [
    (re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|joblib|shelve|marshal)\b", re.M), "imports"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"), "torch.load without weights_only=True"),
]


def test_no_pickle_in_the_package():
    found = []
    for folder in ("kb", "ingest", "llm", "app"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for pattern, what in _UNSAFE:
                for m in pattern.finditer(text):
                    found.append(f"{path.relative_to(ROOT)}: {what}: {m.group(0).strip()}")
    assert not found, "\n".join(found)


def test_opening_and_searching_never_unpickles(built, tmp_path):
    """Open a KB and search it with every unpickler in the process replaced by one that fails."""
    script = """
import pickle, sys, torch
from kb import KnowledgeBase
from kb.config import Settings
from kb.ingest.embed import get_embedder
settings = Settings(home=sys.argv[1])
get_embedder(settings.embedding)  # the packaged model (safetensors) loads before the trap is set
def trap(*a, **k):
    raise AssertionError("unpickling in the index load path")
pickle.load = pickle.loads = torch.load = trap
pickle.Unpickler = trap
with KnowledgeBase.open("src", settings=settings, create=False) as base:
    for mode in ("dense", "bm25", "hybrid"):
        assert base.search("granary restored", 1, mode=mode)[0].path.endswith("granary.md")
print("ok")
"""
    home = tmp_path / "home"
    shutil.copytree(built / "kbs", home / "kbs")
    for path in (home / "kbs" / "src").glob("vectors-*.faiss"):
        path.unlink()  # so that the run also rebuilds the index from SQLite
    done = subprocess.run([sys.executable, "-c", script, str(home)], env=kb_env(home), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
