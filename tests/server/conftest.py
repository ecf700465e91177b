"""Fixtures for the HTTP tests: a KB built once from docs/samples, and one shared `kb serve` on loopback
(API key, scripted answers) that every test may call."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverkit import KEY, SAMPLES, running, server_settings

from kb import KnowledgeBase
from kb.config import Settings


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory) -> Path:
    """A KB_HOME holding KB 'samples' over docs/samples (built once per session; tests must not change it)."""
    home = tmp_path_factory.mktemp("server-home")
    docs = shutil.copytree(SAMPLES, tmp_path_factory.mktemp("docs") / "samples")
    with KnowledgeBase.open("samples", settings=Settings(home=home)) as kb:
        assert not kb.ingest(docs).failed
    return home


@pytest.fixture(scope="session")
def base_url(sample_home, tmp_path_factory) -> Iterator[str]:
    """The shared server: API key KEY, scripted replies, KB 'samples'. Tests may add and remove their own KBs."""
    with running(server_settings(sample_home, tmp_path_factory.mktemp("replies"))) as url:
        yield url


@pytest.fixture
def client(base_url):
    import httpx

    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c
