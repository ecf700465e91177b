"""The knowledge bases page: create and delete KBs, upload files (with progress and a result per file),
re-ingest a folder, list the documents with their chunk counts, delete one, view its chunks.

The KB in use is picked in the sidebar. Buttons that only change state run as callbacks (before the
page is drawn again); uploads and ingests run in the page so that their progress bar can be shown.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from pathlib import Path

import streamlit as st

from kb import KBError, KnowledgeBase
from kb.app import ingest_view, state
from kb.uploads import remove_document

FLASH = "kb_flash"


def render() -> None:
    st.title("Knowledge bases")
    s = state.settings()
    _flash()
    _create_form()
    name = state.current_kb(s)
    if name is None:
        st.info("Create a knowledge base above, then upload documents into it.")
        return
    st.subheader(f"Knowledge base: {name}")
    ingest_view.show_results()
    # Plain sections rather than tabs: a tab strip forgets the open tab when a rerun shifts the page.
    st.markdown("#### Add files")
    ingest_view.upload_form(name, s)
    st.markdown("#### Documents")
    _documents(name, s)
    with st.expander("Ingest a folder from this machine"):
        ingest_view.folder_form(name, s)
    with st.expander("Delete this knowledge base"):
        _delete_form(name)


def guarded(fn):
    """A widget callback whose errors become a message (callbacks run before the page's own handler)."""
    @functools.wraps(fn)
    def run(*args):
        try:
            fn(*args)
        except KBError as e:
            flash("error", str(e))
        except Exception as e:
            logging.getLogger("kb.app").exception("kb app callback error")
            flash("error", f"Something went wrong: {type(e).__name__}: {e}")
    return run


def flash(kind: str, text: str) -> None:
    """A message shown once at the top of the page after the next rerun."""
    st.session_state[FLASH] = (kind, text)


def _flash() -> None:
    kind, text = st.session_state.pop(FLASH, (None, None))
    if kind:
        getattr(st, kind)(text)


def _create_form() -> None:
    with st.form("create_kb", clear_on_submit=True, border=False):
        cols = st.columns([3, 1], vertical_alignment="bottom")
        cols[0].text_input("New knowledge base", key="new_kb_name", placeholder="letters, digits, '.', '_', '-'")
        cols[1].form_submit_button("Create", on_click=_create)


@guarded
def _create() -> None:
    name = (st.session_state.get("new_kb_name") or "").strip()
    if not name:
        flash("warning", "Type a name for the new knowledge base first.")
        return
    s = state.settings()
    existed = name in state.kb_names(s)
    KnowledgeBase.open(name, settings=s, create=True).close()
    st.session_state[state.CURRENT_KB] = name
    flash("info" if existed else "success",
          f"Switched to the existing knowledge base '{name}'." if existed else f"Created knowledge base '{name}'.")


def _delete_form(name: str) -> None:
    st.write(f"Deletes the index of **{name}** and the files uploaded into it (your folders that were "
             "ingested from their own place stay where they are).")
    sure = st.checkbox(f"Yes, delete '{name}'", key=f"confirm_delete_{name}")
    st.button("Delete knowledge base", type="primary", disabled=not sure, on_click=_delete_kb, args=(name,))


@guarded
def _delete_kb(name: str) -> None:
    s = state.settings()
    state.service(s).delete(name)  # services of other settings see it is gone and drop their object
    st.session_state.pop(state.CURRENT_KB, None)
    st.session_state.pop(state.TURNS, None)
    flash("success", f"Deleted knowledge base '{name}'.")


def _documents(name: str, s) -> None:
    kb = state.open_kb(name, s)
    docs = kb.documents()
    if not docs:
        st.info("No documents yet: add files or ingest a folder.")
        return
    st.table([{"file": Path(d.path).name, "type": d.file_type, "chunks": d.chunks,
               "ingested": _when(d.ingested_at), "folder": str(Path(d.path).parent)} for d in docs])
    for d in docs:
        with st.expander(f"{Path(d.path).name} · {d.chunks} chunks"):
            st.caption(d.path)
            cols = st.columns(2)
            cols[0].button("Delete document", key=f"del_{d.doc_id}", on_click=_delete_doc, args=(name, d.doc_id, d.path))
            if cols[1].toggle("Show chunks", key=f"chunks_{d.doc_id}"):
                ingest_view.show_chunks(name, s, d)


@guarded
def _delete_doc(name: str, doc_id: str, path: str) -> None:
    s = state.settings()
    with state.writer(name, s) as kb:
        remove_document(kb, doc_id)
    flash("success", f"Removed {Path(path).name} from '{name}'.")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":  # run as a page of app/main.py
    render()
