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
from kb.types import format_location

RESULTS = "kb_ingest_results"
UPLOADER = "kb_uploader_generation"
_ICON = {"added": "✅", "updated": "🔄", "unchanged": "⏸️", "failed": "❌", "removed": "🗑️"}

CATCH_UP = {"keywords": "Building the keyword index", "vectors": "Summing the vectors per language (once)"}


def upload_form(name: str, s: Settings) -> None:
    limit = s.server.max_upload_mb
    files = st.file_uploader(f"Drop files here (up to {limit:g} MB each)", accept_multiple_files=True,
                             key=f"uploader_{st.session_state.get(UPLOADER, 0)}")
    if st.button("Add to knowledge base", type="primary", disabled=not files, key="add_files"):
        _upload(name, s, [(f.name, f.getvalue(), f.size) for f in files])
        st.session_state[UPLOADER] = st.session_state.get(UPLOADER, 0) + 1  # empties the uploader
        st.rerun()


def folder_form(name: str, s: Settings) -> None:
    folder = st.text_input("Folder or file on this machine", key="ingest_path",
                           help="Re-ingesting a folder adds new files, updates changed ones and skips the rest.")
    prune = st.checkbox("Also remove documents whose files were deleted", key="ingest_prune")
    if st.button("Ingest", key="ingest_folder", disabled=not (folder or "").strip()):
        path = Path(folder.strip()).expanduser()
        if not path.exists():
            st.error(f"{path} does not exist on the machine the app runs on; give a folder or file path there.")
            return
        _run(name, s, path, prune=prune)
        st.rerun()


def _progress():
    """A progress bar, and the ingest callback that moves it (a file at a time; OCR a page at a time; the keyword
    index and the vectors' language sums of a KB made before them, built first)."""
    bar = st.progress(0.0, text="Starting...")
    done = {"n": 0, "total": 1}

    def progress(event) -> None:
        if event.kind == "start":
            done["total"] = max(event.total, 1)
        elif event.kind == "file" and event.result.status not in ("unsupported", "removed"):
            done["n"] += 1
            bar.progress(min(done["n"] / done["total"], 1.0),
                         text=f"{done['n']} / {done['total']} files: {Path(event.result.path).name}")
        elif event.kind in CATCH_UP and event.total:  # a KB made by an older kb is brought up to date first
            bar.progress(min(event.chunks / event.total, 1.0),
                         text=f"{CATCH_UP[event.kind]}: {event.chunks:,} / {event.total:,} chunks")
        elif event.kind == "page" and event.total > 1:  # OCR of a scan: a page every second or two
            bar.progress(min(done["n"] / done["total"], 1.0),
                         text=f"{done['n']} / {done['total']} files; reading {Path(event.path).name} by OCR: "
                              f"page {event.page} of {event.total}")
    return bar, progress


def _line(status: str, label: str, chunks: int, reason: str, ocr_pages: int) -> tuple[str, str, str]:
    """One result line: (status, file, detail)."""
    if status in ("unsupported", "refused"):
        return "failed", label, reason or "not a supported document type"
    ocr = f", {ocr_pages} pages by OCR" if ocr_pages else ""
    return status, label, f"{chunks} chunks{ocr}" if status in ("added", "updated") else reason


def _upload(name: str, s: Settings, files: list[tuple[str, bytes, int]]) -> None:
    """Store and ingest the uploads by the service's rule, with a progress bar; one result line per file."""
    bar, progress = _progress()
    try:
        uploaded = state.service(s).upload(name, files, progress=progress)
    except KBError as e:
        st.session_state[RESULTS] = [("failed", "upload", str(e))]
        return
    if uploaded.ingest is not None:
        bar.progress(1.0, text=f"Done in {uploaded.ingest.seconds:.1f} s")
    lines = []
    for r in uploaded.files:
        label = r.filename if r.path is None or r.filename == r.path.name else f"{r.path.name} (sent as {r.filename})"
        lines.append(_line(r.status, label, r.chunks, r.reason, r.ocr_pages))
    st.session_state[RESULTS] = lines


def _run(name: str, s: Settings, path: Path, prune: bool = False) -> None:
    """Ingest a folder or file of this machine with a progress bar; one result line per file."""
    bar, progress = _progress()
    try:
        with state.writer(name, s) as kb:
            report = kb.ingest(path, prune=prune, progress=progress)
    except KBError as e:
        st.session_state[RESULTS] = [("failed", "ingest", str(e))]
        return
    bar.progress(1.0, text=f"Done in {report.seconds:.1f} s")
    st.session_state[RESULTS] = [_line(f.status, Path(f.path).name, f.chunks, f.reason, f.ocr_pages)
                                 for f in report.files]


def show_results() -> None:
    """The last ingest's result, one line per file (added / updated / unchanged / failed with reason)."""
    lines = st.session_state.get(RESULTS)
    if not lines:
        return
    st.markdown("**Last ingest**")
    for status, label, detail in lines:
        text = f"{_ICON.get(status, '•')} **{status}** — {label}" + (f": {detail}" if detail else "")
        st.markdown(text)
    if any(status == "failed" for status, _, _ in lines):
        st.caption("Failed files were skipped; the rest were indexed. Fix the file (or its name) and add it again.")


def show_chunks(name: str, s: Settings, doc) -> None:
    """A document's chunks in reading order (page, section, text); the first 200 of a long one."""
    chunks = state.open_kb(name, s).chunks(doc.doc_id)
    for i, h in enumerate(chunks[:200], start=1):
        where = format_location("", h.page, h.section, sep=" · ")
        st.markdown(f"**{i}.** {where}")
        st.text(h.text)
    if len(chunks) > 200:
        st.caption(f"… and {len(chunks) - 200} more chunks (the Python API's `KnowledgeBase.chunks` lists them all).")
