"""Adding documents from the browser: uploads and folder re-ingests with a progress bar and one result
line per file, and a document's chunks.

The ingest runs in this session's script thread with a KB object of its own (app/state.py), so the
other sessions keep searching and answering while it works; the KB's write lock makes a second writer
(another session, or `kb ingest` in a terminal) fail with a message instead of waiting forever.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kb import KBError, Settings
from kb.app import state
from kb.app.uploads import Saved, save_upload

RESULTS = "kb_ingest_results"
UPLOADER = "kb_uploader_generation"
_ICON = {"added": "✅", "updated": "🔄", "unchanged": "⏸️", "failed": "❌", "removed": "🗑️"}


def upload_form(name: str, s: Settings) -> None:
    limit = s.server.max_upload_mb
    files = st.file_uploader(f"Drop files here (up to {limit:g} MB each)", accept_multiple_files=True,
                             key=f"uploader_{st.session_state.get(UPLOADER, 0)}")
    if st.button("Add to knowledge base", type="primary", disabled=not files, key="add_files"):
        saved = [save_upload(s, name, f.name, f.getvalue()) for f in files]
        _run(name, s, [x.path for x in saved if x.path], saved)
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
        _run(name, s, [path], [], prune=prune)
        st.rerun()


def _run(name: str, s: Settings, paths: list[Path], saved: list[Saved], prune: bool = False) -> None:
    """Ingest with a progress bar; keep one result line per file for the page to show."""
    lines = [("failed", x.name, x.reason) for x in saved if x.path is None]
    names = {x.path: x.name if x.name == x.path.name else f"{x.path.name} (sent as {x.name})"
             for x in saved if x.path}
    if paths:
        bar = st.progress(0.0, text="Starting...")
        done = {"n": 0, "total": 1}

        def progress(event) -> None:
            if event.kind == "start":
                done["total"] = max(event.total, 1)
            elif event.kind == "file" and event.result.status not in ("unsupported", "removed"):
                done["n"] += 1
                bar.progress(min(done["n"] / done["total"], 1.0),
                             text=f"{done['n']} / {done['total']} files: {Path(event.result.path).name}")
            elif event.kind == "page" and event.total > 1:  # OCR of a scan: a page every second or two
                bar.progress(min(done["n"] / done["total"], 1.0),
                             text=f"{done['n']} / {done['total']} files; reading {Path(event.path).name} by OCR: "
                                  f"page {event.page} of {event.total}")

        try:
            with state.writer(name, s) as kb:
                report = kb.ingest(*paths, prune=prune, progress=progress)
        except KBError as e:
            st.session_state[RESULTS] = [("failed", "ingest", str(e))] + lines
            return
        bar.progress(1.0, text=f"Done in {report.seconds:.1f} s")
        for f in report.files:
            label = names.get(Path(f.path), Path(f.path).name)
            if f.status == "unsupported":
                lines.append(("failed", label, f.reason or "not a supported document type"))
            else:
                ocr = f", {f.ocr_pages} pages by OCR" if f.ocr_pages else ""
                lines.append((f.status, label, f"{f.chunks} chunks{ocr}" if f.status in ("added", "updated") else f.reason))
    st.session_state[RESULTS] = lines


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
        where = " · ".join(x for x in (f"p. {h.page}" if h.page is not None else "", h.section) if x)
        st.markdown(f"**{i}.** {where}")
        st.text(h.text)
    if len(chunks) > 200:
        st.caption(f"… and {len(chunks) - 200} more chunks (the Python API's `KnowledgeBase.chunks` lists them all).")
