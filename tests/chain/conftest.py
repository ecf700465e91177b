"""A knowledge base over docs/samples (real documents, the packaged embedder), built once per test session,
and a way to open it with other answer/llm settings (the scripted backend comes through the factory)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kb import KnowledgeBase
from kb.config import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("kbhome")
    docs = shutil.copytree(SAMPLES, tmp_path_factory.mktemp("docs") / "samples")
    with KnowledgeBase.open("samples", settings=Settings(home=home)) as kb:
        report = kb.ingest(docs)
    assert not report.failed
    return home


@pytest.fixture
def open_kb(sample_home, tmp_path, settings):
    """open_kb(replies=[...], n_ctx=..., languages=("en", "zh"), **answer_settings) -> KnowledgeBase using the
    scripted backend (English only unless `languages` says otherwise)."""
    opened = []

    def _open(replies: list[str] | None = None, n_ctx: int = 4096, backend: str = "scripted",
              languages: tuple[str, ...] | None = None, **answer):
        model = ""
        if replies is not None:
            model = str(tmp_path / f"replies-{len(opened)}.json")
            script = {"replies": replies, "languages": list(languages)} if languages else replies
            Path(model).write_text(json.dumps(script), encoding="utf-8")
        s = Settings(home=sample_home, llm={"backend": backend, "model": model, "n_ctx": n_ctx,
                                            "temperature": 0}, answer=answer)
        kb = KnowledgeBase.open("samples", settings=s, create=False)
        opened.append(kb)
        return kb

    yield _open
    for kb in opened:
        kb.close()
