"""Adding documents from the browser: uploads and folder re-ingests with a progress bar and one result
line per file, and a document's chunks.

The ingest runs in this session's script thread with a KB object of its own (app/state.py), so the
other sessions keep searching and answering while it works; the KB's write lock makes a second writer
(another session, or `kb ingest` in a terminal) fail with a message instead of waiting forever. Uploads follow
the answer service's one rule, as the HTTP API's do (kb.uploads.add_uploads): a type kb cannot read, an empty
file or one over the limit is refused with the reason, and a file that failed to ingest is not kept.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kb import KBError, Settings
from kb.app import state
from kb.app.i18n import t
from kb.types import format_location

RESULTS = "kb_ingest_results"
UPLOADER = "kb_uploader_generation"
_ICON = {"added": "✅", "updated": "🔄", "unchanged": "⏸️", "failed": "❌", "removed": "🗑️"}

CATCH_UP = {"keywords": "ingest.keywords", "vectors": "ingest.vectors"}  # progress event kind -> i18n key


def upload_form(name: str, s: Settings) -> None:
    limit = s.server.max_upload_mb
    files = st.file_uploader(t("ingest.drop", limit=f"{limit:g}"), accept_multiple_files=True,
                             key=f"uploader_{st.session_state.get(UPLOADER, 0)}")
    if st.button(t("ingest.add"), type="primary", disabled=not files, key="add_files"):
        _upload(name, s, [(f.name, f.getvalue(), f.size) for f in files])
        st.session_state[UPLOADER] = st.session_state.get(UPLOADER, 0) + 1  # empties the uploader
        st.rerun()


def folder_form(name: str, s: Settings) -> None:
    folder = st.text_input(t("ingest.path"), key="ingest_path", help=t("ingest.path_help"))
    prune = st.checkbox(t("ingest.prune"), key="ingest_prune")
    if st.button(t("ingest.run"), key="ingest_folder", disabled=not (folder or "").strip()):
        path = Path(folder.strip()).expanduser()
        if not path.exists():
            st.error(t("ingest.no_path", path=path))
            return
        _run(name, s, path, prune=prune)
        st.rerun()


def _progress():
    """A progress bar, and the ingest callback that moves it (a file at a time; OCR a page at a time; the keyword
    index and the vectors' language sums of a KB made before them, built first)."""
    bar = st.progress(0.0, text=t("ingest.starting"))
    done = {"n": 0, "total": 1}

    def progress(event) -> None:
        if event.kind == "start":
            done["total"] = max(event.total, 1)
        elif event.kind == "file" and event.result.status not in ("unsupported", "removed"):
            done["n"] += 1
            bar.progress(min(done["n"] / done["total"], 1.0),
                         text=t("ingest.file_progress", n=done["n"], total=done["total"],
                                name=Path(event.result.path).name))
        elif event.kind in CATCH_UP and event.total:  # a KB made by an older kb is brought up to date first
            bar.progress(min(event.chunks / event.total, 1.0),
                         text=t("ingest.catch_up", what=t(CATCH_UP[event.kind]), done=f"{event.chunks:,}",
                                total=f"{event.total:,}"))
        elif event.kind == "page" and event.total > 1:  # OCR of a scan: a page every second or two
            bar.progress(min(done["n"] / done["total"], 1.0),
                         text=t("ingest.ocr_progress", n=done["n"], total=done["total"],
                                name=Path(event.path).name, page=event.page, pages=event.total))
    return bar, progress


def _line(status: str, label: str, chunks: int, reason: str, ocr_pages: int) -> tuple[str, str, str]:
    """One result line: (status, file, detail)."""
    if status in ("unsupported", "refused"):
        return "failed", label, reason or t("ingest.unsupported")
    if status not in ("added", "updated"):
        return status, label, reason
    return status, label, t("ingest.chunks_ocr", chunks=chunks, pages=ocr_pages) if ocr_pages else \
        t("ingest.chunks", chunks=chunks)


def _upload(name: str, s: Settings, files: list[tuple[str, bytes, int]]) -> None:
    """Store and ingest the uploads by the service's rule, with a progress bar; one result line per file."""
    bar, progress = _progress()
    try:
        uploaded = state.service(s).upload(name, files, progress=progress)
    except KBError as e:
        st.session_state[RESULTS] = [("failed", t("ingest.upload"), str(e))]
        return
    if uploaded.ingest is not None:
        bar.progress(1.0, text=t("ingest.done", seconds=f"{uploaded.ingest.seconds:.1f}"))
    lines = []
    for r in uploaded.files:
        label = (r.filename if r.path is None or r.filename == r.path.name
                 else t("ingest.sent_as", name=r.path.name, sent=r.filename))
        lines.append(_line(r.status, label, r.chunks, r.reason, r.ocr_pages))
    st.session_state[RESULTS] = lines


def _run(name: str, s: Settings, path: Path, prune: bool = False) -> None:
    """Ingest a folder or file of this machine with a progress bar; one result line per file."""
    bar, progress = _progress()
    try:
        with state.writer(name, s) as kb:
            report = kb.ingest(path, prune=prune, progress=progress)
    except KBError as e:
        st.session_state[RESULTS] = [("failed", t("ingest.ingest"), str(e))]
        return
    bar.progress(1.0, text=t("ingest.done", seconds=f"{report.seconds:.1f}"))
    st.session_state[RESULTS] = [_line(f.status, Path(f.path).name, f.chunks, f.reason, f.ocr_pages)
                                 for f in report.files]


def show_results() -> None:
    """The last ingest's result, one line per file (added / updated / unchanged / failed with reason)."""
    lines = st.session_state.get(RESULTS)
    if not lines:
        return
    st.markdown(f"**{t('ingest.last')}**")
    for status, label, detail in lines:
        text = f"{_ICON.get(status, '•')} **{t('status.' + status)}** — {label}"
        text += f": {detail}" if detail else ""
        st.markdown(text)
    if any(status == "failed" for status, _, _ in lines):
        st.caption(t("ingest.failed_note"))


def show_chunks(name: str, s: Settings, doc) -> None:
    """A document's chunks in reading order (page, section, text); the first 200 of a long one."""
    chunks = state.open_kb(name, s).chunks(doc.doc_id)
    for i, h in enumerate(chunks[:200], start=1):
        where = format_location("", h.page, h.section, sep=" · ", page_label=t("sources.page", page="{}"))
        st.markdown(f"**{i}.** {where}")
        st.text(h.text)
    if len(chunks) > 200:
        st.caption(t("ingest.more_chunks", n=len(chunks) - 200))
