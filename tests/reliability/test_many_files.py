"""A folder of 20,000 tiny files: the run finishes, every file is a document, re-ingest is a no-op."""

from __future__ import annotations

import bad_inputs as bad
import pytest
from kbproc import ingest_json, note

from kb import KnowledgeBase
from kb.config import Settings


@pytest.mark.slow
def test_twenty_thousand_tiny_files(tmp_path):
    home = tmp_path / "home"
    expect = bad.tiny_files(tmp_path, 20_000)[0]
    status, report, peak = ingest_json(home, str(tmp_path / "tiny"), "--kb", "tiny", timeout=1200)
    assert status == 0 and report["counts"]["added"] == 20_000
    again_status, again, _ = ingest_json(home, str(tmp_path / "tiny"), "--kb", "tiny", timeout=600)
    assert again_status == 0 and again["counts"]["unchanged"] == 20_000 and again["chunks_added"] == 0
    with KnowledgeBase.open("tiny", settings=Settings(home=home), create=False) as base:
        assert len(base.documents()) == 20_000
        assert base.search("item q12345x", 1, mode="bm25")[0].path == str(expect.path)
    note(f"ingest {report['seconds']:.0f} s, re-ingest {again['seconds']:.1f} s, peak RSS {peak / 2**20:,.0f} MB")
