"""The answer's sources as numbered cards: file, page, section, score; each expands to the passage with
the sentence it was cited for highlighted, offers the source file for download, and shows the passage on its
page on request (app/evidence_view.py).

Passage text comes from the user's documents, so it is HTML-escaped before it is shown. Which passage
sentence to highlight is chosen here by shared words and CJK characters with the citing answer sentence;
kb records which answer sentence cites a passage, not which of the passage's sentences it rests on.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import streamlit as st

from kb import Answer, Citation, Passage
from kb.app import evidence_view
from kb.app.evidence_view import marked_html
from kb.app.i18n import t
from kb.text.lang import HAN
from kb.text.sentences import SENTENCE_SPAN
from kb.types import format_location

_TERM = re.compile(f"[{HAN}]|[A-Za-z0-9]+")


def _terms(text: str) -> set[str]:
    return {t.lower() for t in _TERM.findall(text) if len(t) > 1 or not t.isascii()}


def best_sentence(passage: str, cited: str) -> tuple[int, int] | None:
    """(start, end) of the passage sentence sharing most terms with the cited sentence, or None."""
    want = _terms(cited)
    best, best_score = None, 0
    for m in SENTENCE_SPAN.finditer(passage):
        score = len(want & _terms(m.group()))
        if score > best_score:
            best, best_score = (m.start(), m.end()), score
    return best


def highlighted_html(passage: str, cited: list[str]) -> str:
    """The passage as escaped HTML, the sentence(s) the answer cites it for wrapped in <mark>."""
    return marked_html(passage, sorted({s for c in cited if (s := best_sentence(passage, c))}))


def quote(passage: str, cited: list[str]) -> str:
    """The passage's own sentence the card highlights first (the one shown on its page), or ""."""
    span = next((s for c in cited if (s := best_sentence(passage, c))), None)
    return passage[span[0]:span[1]].strip() if span else ""


def card_title(p: Passage) -> str:
    """'[1] file.md · p. 3 · § Section · score 0.87' (the label of a source card, in the app's language)."""
    where = format_location(Path(p.path).name, p.page, p.section, sep=" · ",
                            page_label=t("sources.page", page="{}"))
    return f"[{p.n}] {where} · {t('sources.score', score=f'{p.score:.2f}')}"


def _reader(path: Path):
    return lambda: path.read_bytes()


def render_sources(answer: Answer, key: str, kb_name: str | None = None) -> None:
    """Numbered source cards under an answer (the cited passages; all passages if none was cited); with the
    KB's name, each card can show its passage on its page (app/evidence_view.py)."""
    shown = answer.cited_passages or list(answer.passages)
    if not shown:
        return
    by_n: dict[int, list[Citation]] = {}
    for c in answer.citations:
        by_n.setdefault(c.n, []).append(c)
    st.caption(t("sources.cited") if answer.cited_passages else t("sources.searched"))
    cited = {p.n: [c.sentence for c in by_n.get(p.n, [])] for p in shown}
    quotes = {p.n: quote(p.text, cited[p.n]) for p in shown}
    for p in shown:
        with st.expander(card_title(p)):
            st.markdown(highlighted_html(p.text, cited[p.n]), unsafe_allow_html=True)
            if kb_name:
                evidence_view.show(kb_name, p, shown, quotes, key)
            st.caption(p.path)
            _download(Path(p.path), f"{key}-{p.n}")


def _download(path: Path, key: str) -> None:
    if not path.is_file():
        st.caption(t("sources.missing"))
        return
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # The file is read only when the button is clicked, not on every rerun.
    st.download_button(t("sources.download", name=path.name), _reader(path), file_name=path.name, mime=mime,
                       key=key, on_click="ignore")
