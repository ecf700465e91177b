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
from kb.app.i18n import t
from kb.uploads import remove_document

FLASH = "kb_flash"


def render() -> None:
    st.title(t("kbs.title"))
    s = state.settings()
    _flash()
    _create_form()
    name = state.current_kb(s)
    if name is None:
        st.info(t("kbs.create_first"))
        return
    st.subheader(t("kbs.current", name=name))
    ingest_view.show_results()
    # Plain sections rather than tabs: a tab strip forgets the open tab when a rerun shifts the page.
    st.markdown(f"#### {t('kbs.add_files')}")
    ingest_view.upload_form(name, s)
    st.markdown(f"#### {t('kbs.documents')}")
    _documents(name, s)
    with st.expander(t("kbs.folder")):
        ingest_view.folder_form(name, s)
    with st.expander(t("kbs.delete_section")):
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
            flash("error", t("error.callback", kind=type(e).__name__, error=e))
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
        cols[0].text_input(t("kbs.new_name"), key="new_kb_name", placeholder=t("kbs.name_rule"))
        cols[1].form_submit_button(t("kbs.create"), on_click=_create)


@guarded
def _create() -> None:
    name = (st.session_state.get("new_kb_name") or "").strip()
    if not name:
        flash("warning", t("kbs.need_name"))
        return
    s = state.settings()
    existed = name in state.kb_names(s)
    KnowledgeBase.open(name, settings=s, create=True).close()
    st.session_state[state.CURRENT_KB] = name
    flash("info" if existed else "success",
          t("kbs.switched", name=name) if existed else t("kbs.created", name=name))


def _delete_form(name: str) -> None:
    st.write(t("kbs.delete_note", name=name))
    sure = st.checkbox(t("kbs.delete_sure", name=name), key=f"confirm_delete_{name}")
    st.button(t("kbs.delete"), type="primary", disabled=not sure, on_click=_delete_kb, args=(name,))


@guarded
def _delete_kb(name: str) -> None:
    s = state.settings()
    state.service(s).delete(name)  # services of other settings see it is gone and drop their object
    st.session_state.pop(state.CURRENT_KB, None)
    st.session_state.pop(state.TURNS, None)
    flash("success", t("kbs.deleted", name=name))


def _documents(name: str, s) -> None:
    kb = state.open_kb(name, s)
    docs = kb.documents()
    if not docs:
        st.info(t("kbs.no_docs"))
        return
    st.table([{t("kbs.col_file"): Path(d.path).name, t("kbs.col_type"): d.file_type,
               t("kbs.col_chunks"): d.chunks, t("kbs.col_ingested"): _when(d.ingested_at),
               t("kbs.col_folder"): str(Path(d.path).parent)} for d in docs])
    for d in docs:
        with st.expander(t("kbs.doc_label", file=Path(d.path).name, chunks=d.chunks)):
            st.caption(d.path)
            cols = st.columns(2)
            cols[0].button(t("kbs.delete_doc"), key=f"del_{d.doc_id}", on_click=_delete_doc,
                           args=(name, d.doc_id, d.path))
            if cols[1].toggle(t("kbs.show_chunks"), key=f"chunks_{d.doc_id}"):
                ingest_view.show_chunks(name, s, d)


@guarded
def _delete_doc(name: str, doc_id: str, path: str) -> None:
    s = state.settings()
    with state.writer(name, s) as kb:
        remove_document(kb, doc_id)
    flash("success", t("kbs.removed", file=Path(path).name, name=name))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":  # run as a page of app/main.py
    render()
