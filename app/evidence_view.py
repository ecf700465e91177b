"""A source card's evidence: the cited passage on its page image, highlighted (kb/evidence.py), or for formats
without pages its section's text with the sentence marked.

Drawn only when the user turns the card's "show on the page" switch on, so answering never waits for a page to be
rendered or OCR'd; the image comes from kb's evidence cache after the first time (bounded on disk), and Streamlit
holds only the images of the switches that are on. Cards of one answer that cite the same page of one document
share one image with all their sentences highlighted: it is shown in the first of them that is open, and the others
say where it is. Errors (a moved or changed original, a damaged PDF) are a warning in the user's language.
"""

from __future__ import annotations

import html
from pathlib import Path

import streamlit as st

from kb import KBError, KnowledgeBase, Passage
from kb import evidence as kb_evidence
from kb.app import state
from kb.app.i18n import t
from kb.errors import EvidenceError, PassageNotFoundError, SourceChangedError
from kb.evidence_pdf import squeeze


def marked_html(text: str, spans: list[tuple[int, int]]) -> str:
    """The text as escaped HTML, the (start, end) spans wrapped in <mark> (overlapping ones skipped)."""
    out, pos = [], 0
    for start, end in sorted(spans):
        if start < pos:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        pos = end
    out.append(html.escape(text[pos:]))
    body = "".join(out).replace("\n", "<br>")
    return f'<div class="kb-passage" style="white-space: pre-wrap">{body}</div>'


def switch_key(key: str, n: int) -> str:
    """The session key of card [n]'s "show on the page" switch (key: the answer's)."""
    return f"{key}-{n}-page"


def show(kb_name: str, card: Passage, cards: list[Passage], quotes: dict[int, str], key: str) -> None:
    """Card [n]'s switch, and when it is on, its page image (shared with the cards citing the same page)."""
    label = t("evidence.show_page") if card.page is not None else t("evidence.show_section")
    if not st.toggle(label, key=switch_key(key, card.n)):
        return
    group = [c for c in cards if c.page is not None and (c.doc_id, c.page) == (card.doc_id, card.page)] or [card]
    first = next(c for c in group if c is card or st.session_state.get(switch_key(key, c.n)))
    if first is not card:
        st.caption(t("evidence.shown_with", n=first.n))
        return
    try:
        with st.spinner(t("evidence.drawing")):
            found = _view(state.open_kb(kb_name), [card, *(c for c in group if c is not card)], quotes)
    except Exception as e:  # noqa: BLE001 - a card's page must never break the answer above it
        st.warning(_message(e, card))
        return
    own = next(f for c, f in found if c is card)
    if own.image:
        cited = " ".join(f"[{c.n}]" for c, f in found if f.boxes)
        st.image(own.image, caption=t("evidence.page_caption", name=Path(card.path).name, page=own.page or 1,
                                      cards=cited or f"[{card.n}]"), output_format="PNG")  # never JPEG's blur
    else:
        st.markdown(marked_html(own.context, [own.mark] if own.mark else []), unsafe_allow_html=True)
    if own.note:
        st.caption(own.note)  # kb's own words: how the sentence was matched, or why there is no highlight


def _view(kb: KnowledgeBase, group: list[Passage], quotes: dict[int, str]
          ) -> list[tuple[Passage, kb_evidence.Evidence]]:
    """The group's passages drawn on one page (the first card's: the one opened), each with its Evidence: for each, its
    chunk that holds its quote on that page (a card whose chunks lie on other pages is left out)."""
    hits = [_chunk(kb, c, quotes.get(c.n, "")) for c in group]
    # in card order, so that whichever card is opened the page has one cache entry
    kept = sorted(((c, h) for c, h in zip(group, hits) if h.page == hits[0].page), key=lambda x: x[0].n)
    found = kb_evidence.view_page(kb, [(h.chunk_id, quotes.get(c.n) or None) for c, h in kept])
    return [(c, f) for (c, _), f in zip(kept, found)]


def _chunk(kb: KnowledgeBase, card: Passage, quote: str):
    """Of the card's chunks (neighbours merged into one passage), the one on its page holding the quote."""
    hits = [kb_evidence.passage(kb, i) for i in card.chunk_ids]
    on_page = [h for h in hits if h.page == card.page] or hits
    want = squeeze(quote)[0]
    return next((h for h in on_page if want and want in squeeze(h.text)[0]), on_page[0])


def _message(error: Exception, card: Passage) -> str:
    """The warning for a page that cannot be shown, in the user's language."""
    name = Path(card.path).name
    if isinstance(error, SourceChangedError):
        return t("evidence.changed", name=name)
    if isinstance(error, PassageNotFoundError):
        return t("evidence.gone", name=name)
    if isinstance(error, EvidenceError):
        return t("evidence.unreadable", name=name, error=str(error))
    if isinstance(error, KBError):
        return t("evidence.failed", name=name, error=str(error))
    return t("evidence.failed", name=name, error=f"{type(error).__name__}: {error}")
