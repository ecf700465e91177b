"""The entry script of the web app (`kb app`, or `streamlit run` on this file): sidebar + two pages.

Every error reaches the user as a message: kb's own errors (KBError) say what to fix; anything else
is shown in one line with a pointer to the server log, which gets the traceback.
"""

from __future__ import annotations

import logging

import streamlit as st

from kb import KBError
from kb.app import sidebar

log = logging.getLogger("kb.app")


def main() -> None:
    st.set_page_config(page_title="kb — ask your documents", page_icon=":material/menu_book:", layout="wide")
    pages = st.navigation([
        st.Page("chat_page.py", title="Chat", icon=":material/chat:", url_path="chat", default=True),
        st.Page("kbs_page.py", title="Knowledge bases", icon=":material/folder:", url_path="kbs"),
    ])
    try:
        sidebar.render()
        pages.run()
    except KBError as e:
        st.error(str(e))
    except Exception as e:  # the UI shows a message, never a stack trace
        log.exception("kb app error")
        st.error(f"Something went wrong: {type(e).__name__}: {e}. The details are in the terminal that runs "
                 "`kb app`; if a setting caused it, change it in the sidebar.")


main()
