"""A private KB_HOME for the app's tests, with two small documents (one Chinese, one English) whose facts
are found nowhere else, and the deterministic scripted model (registered through kb's real factory).

The app reads its settings from the environment as `kb app` would, so the fixtures set KB_* variables.
"""

from __future__ import annotations

import os

import pytest
from app_fixtures import app_env, write_docs, write_replies

from kb import KnowledgeBase, load_settings


@pytest.fixture(scope="module")
def app_home(tmp_path_factory):
    """A KB_HOME with KB 'shared' holding the two documents; the KB_* variables point at it."""
    root = tmp_path_factory.mktemp("app")
    home = root / "kbhome"
    docs = write_docs(root / "docs")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("KB_"):
                mp.delenv(key)
        for key, value in app_env(home, write_replies(root / "replies.json", ["unused"])).items():
            mp.setenv(key, value)
        with KnowledgeBase.open("shared", settings=load_settings()) as kb:
            assert not kb.ingest(*docs).failed
        yield home
