"""Index files are checked: wrong format, tampering and a mismatched embedder are clear errors."""

from __future__ import annotations

import json

import pytest

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import EmbedderMismatchError, IndexFormatError, KBNotFoundError, LockedError
from kb.stores.local import _WriteLock as _write_lock


def _kb(settings, tmp_path, name="s"):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    (folder / "x.md").write_text("# X\n\nThe xylophone is tuned in the music room.\n")
    base = KnowledgeBase.open(name, settings=settings)
    base.ingest(folder)
    return base


def test_open_missing_kb_without_create(settings):
    with pytest.raises(KBNotFoundError, match="kb ingest PATH --kb nope"):
        KnowledgeBase.open("nope", settings=settings, create=False)


def test_unknown_manifest_version(settings, tmp_path):
    base = _kb(settings, tmp_path)
    base.close()
    path = base.folder / "manifest.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match="version 99"):
        KnowledgeBase.open("s", settings=settings)


def test_garbage_manifest(settings, tmp_path):
    base = _kb(settings, tmp_path)
    base.close()
    (base.folder / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="manifest.json"):
        KnowledgeBase.open("s", settings=settings)


def test_other_embedder_is_refused(settings, tmp_path):
    _kb(settings, tmp_path).close()
    other = Settings(home=settings.home, embedding={"model": "BAAI/bge-small-zh-v1.5"})
    base = KnowledgeBase.open("s", settings=other)
    with pytest.raises(EmbedderMismatchError, match="--rebuild"):
        base.search("xylophone")


def test_missing_or_truncated_faiss_file_is_rebuilt_from_sqlite(settings, tmp_path):
    base = _kb(settings, tmp_path)
    base.close()
    faiss_file = next(base.folder.glob("vectors-*.faiss"))
    faiss_file.unlink()
    again = KnowledgeBase.open("s", settings=settings)
    assert again.search("xylophone tuning", k=1, mode="dense")[0].path.endswith("x.md")
    again.close()
    faiss_file.write_bytes(b"\x00" * 10)  # a file kb did not write is never parsed: rebuilt from SQLite
    with KnowledgeBase.open("s", settings=settings) as again:
        assert again.search("xylophone tuning", k=1, mode="dense")[0].path.endswith("x.md")


def test_second_writer_fails_clearly(settings, tmp_path):
    base = _kb(settings, tmp_path)
    with _write_lock(base.folder, 0):
        with pytest.raises(LockedError, match="another process"):
            base.ingest(tmp_path / "docs")


def test_invalid_names_are_refused(settings):
    from kb.errors import ConfigError

    for bad in ("../evil", ".hidden", "a/b", "x" * 65):
        with pytest.raises(ConfigError):
            KnowledgeBase.open(bad, settings=settings)
