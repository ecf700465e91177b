"""The one upload rule the app and the HTTP API follow (kb.uploads.add_uploads): refused files get their reason
and are never written, ingested ones are kept in the KB's upload folder, and a file that failed to ingest is
not left behind."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import UploadRefused
from kb.uploads import add_uploads, upload_dir

GOOD = b"# Snapshots\n\nHourly snapshots are kept for two days.\n"


def test_each_upload_is_refused_kept_or_cleaned_up_with_its_reason(tmp_path):
    settings = Settings(home=tmp_path)
    with KnowledgeBase.open("up", settings=settings) as kb:
        report = add_uploads(kb, [("policy.md", GOOD, None), ("tool.exe", b"MZ", None), ("empty.txt", b"", None),
                                  ("scan.pdf", b"%PDF-1.4 garbage", None)])
        good, exe, empty, pdf = report.files
        folder = upload_dir(settings, "up")
        assert good.status == "added" and good.path == (folder / "policy.md").resolve() and good.chunks >= 1
        assert exe.status == "refused" and "unsupported file type '.exe'" in exe.reason and exe.path is None
        assert empty.status == "refused" and "empty" in empty.reason
        assert pdf.status == "failed" and pdf.reason and pdf.path is None
        assert sorted(p.name for p in folder.iterdir()) == ["policy.md"]  # nothing else was left behind
        assert [d.path for d in kb.documents()] == [str(good.path)]
        assert "two days" in kb.search("How long are hourly snapshots kept?")[0].text


def test_a_batch_that_must_be_taken_whole_is_refused_before_anything_is_written(tmp_path):
    settings = Settings(home=tmp_path, server={"max_upload_mb": 0.00001})  # about 10 bytes
    with KnowledgeBase.open("up", settings=settings) as kb:
        with pytest.raises(UploadRefused, match="more than server.max_upload_mb") as refused:
            add_uploads(kb, [("small.md", b"# a\n", None), ("policy.md", GOOD, None)], refuse_all=True)
        assert refused.value.status == 413
        assert not upload_dir(settings, "up").exists() and kb.documents() == []
