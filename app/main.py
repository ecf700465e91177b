"""The entry script of the web app (`kb app`, or `streamlit run` on this file): sidebar + two pages, in the
user's language (app/i18n.py).

Every error reaches the user as a message: kb's own errors (KBError) say what to fix; anything else
is shown in one line with a pointer to the server log, which gets the traceback.
"""

from __future__ import annotations

import logging

import streamlit as st

from kb import KBError
from kb.app import sidebar
from kb.app.i18n import t

log = logging.getLogger("kb.app")


def main() -> None:
    st.set_page_config(page_title=t("app.page_title"), page_icon=":material/menu_book:", layout="wide")
    pages = st.navigation([
        st.Page("chat_page.py", title=t("nav.chat"), icon=":material/chat:", url_path="chat", default=True),
        st.Page("kbs_page.py", title=t("nav.kbs"), icon=":material/folder:", url_path="kbs"),
    ])
    try:
        sidebar.render()
        pages.run()
    except KBError as e:
        st.error(str(e))
    except Exception as e:  # the UI shows a message, never a stack trace
        log.exception("kb app error")
        st.error(t("error.unexpected", kind=type(e).__name__, error=e))


main()
