"""Error messages reach the user whole: rich printed "pip install 'kb[local]'" as "pip install 'kb'"
(it read [local] as markup) and cut long paths in two at 80 columns. Found by the index-file tests."""

from __future__ import annotations

from kbproc import run_kb


def test_error_message_keeps_brackets_and_long_paths_whole(tmp_path):
    missing = tmp_path / "[draft]" / ("a-rather-long-folder-name-" * 4) / "report.pdf"
    done, _ = run_kb(tmp_path / "home", "ingest", str(missing), "--kb", "m")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{missing}: no such file or folder" in done.stderr  # verbatim: brackets kept, not wrapped
