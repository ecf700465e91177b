"""A source card's "show on the page" switch (app/evidence_view.py): the cited passage on its page image with the
sentence highlighted yellow, one image for the cards citing one page, a Markdown passage marked in its section,
and a changed original reported as a warning in the user's language.

The images are the PNG bytes the app handed to st.image (read from Streamlit's own media storage as it stores
them), checked for the highlight's yellow pixels where the cited lines are.
"""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from app_fixtures import APP, ZH_NAME, ZH_QUESTION, ZH_REPLY, write_replies
from evidence_docs import tide_table
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from kb import KnowledgeBase, load_settings
from kb.answer.types import Answer, Citation, Passage

PAGE_HEIGHT = 841.89  # A4, points


@pytest.fixture(scope="module")
def tides(app_home, tmp_path_factory):
    """KB 'tides' holding a one-page PDF of 40 numbered lines (several chunks on the page); (its lines, path)."""
    folder = tmp_path_factory.mktemp("tides")
    lines = tide_table(folder / "tides.pdf")
    with KnowledgeBase.open("tides", settings=load_settings(), create=True) as kb:
        assert not kb.ingest(folder).failed
    return lines, folder / "tides.pdf"


@pytest.fixture
def start_chat(app_home, tmp_path, monkeypatch):
    """start_chat(replies, kb=NAME, language=LANG) -> the chat page, run, with a scripted model saying replies."""

    def _start(replies: list[str], kb: str = "shared", language: str = "en") -> AppTest:
        monkeypatch.setenv("KB_LLM__MODEL", str(write_replies(tmp_path / "replies.json", replies)))
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["kb_current"], at.session_state["kb_language"] = kb, language
        at.run()
        assert not at.exception
        return at

    return _start


@pytest.fixture
def media(monkeypatch):
    """{file id: bytes} of every media file the app stores (st.image's PNGs)."""
    stored: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        file_id = real(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = self._files_by_id[file_id].content
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return stored


def _images(at: AppTest, media: dict[str, bytes]) -> list[np.ndarray]:
    urls = [url for el in at.get("image") for url in el.value]
    return [np.asarray(Image.open(io.BytesIO(media[u.rsplit("/", 1)[1].split(".")[0]])).convert("RGB")).astype(int)
            for u in urls]


def _yellow_rows(rgb: np.ndarray) -> np.ndarray:
    """The y of the pixels painted with the highlight's translucent yellow over white paper."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.nonzero((r > 235) & (g > 225) & (b > 120) & (b < 175))[0]


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "warning") for e in getattr(at, kind))


def _cards_app(kb_name: str, answer: Answer, language: str = "en") -> AppTest:
    """The source cards of `answer` alone, as chat_page renders them under an answer."""

    def script():
        import streamlit as st

        from kb.app.sources import render_sources

        render_sources(st.session_state["answer"], "t0", st.session_state["kb_name"])

    at = AppTest.from_function(script, default_timeout=120)
    at.session_state["answer"], at.session_state["kb_name"] = answer, kb_name
    at.session_state["kb_language"] = language
    return at.run()


def _answer(kb_name: str, cited: list[str]) -> Answer:
    """An answer citing the passages (chunks) of KB `kb_name` that hold these lines, one card each."""
    with KnowledgeBase.open(kb_name, settings=load_settings()) as kb:
        doc = kb.documents()[0]
        chunks = kb.chunks(doc.doc_id)
    passages, citations = [], []
    for n, line in enumerate(cited, 1):
        hit = next(h for h in chunks if line in h.text)
        passages.append(Passage(n, doc.path, doc.path, hit.section, hit.page, hit.text, 0.9, (hit.chunk_id,),
                                doc.doc_id))
        citations.append(Citation(n, doc.path, hit.page, hit.section, hit.text, line, 1.0))
    return Answer("q", "q", " ".join(f"{line} [{n}]" for n, line in enumerate(cited, 1)), "answered",
                  tuple(citations), tuple(passages))


def _line_band(rows: np.ndarray, scale: float, n: int) -> np.ndarray:
    """Which of the yellow rows lie on line n of the tide table (baseline 800 - 18 n points up the page)."""
    baseline = PAGE_HEIGHT - (800 - 18 * n)
    return (rows / scale >= baseline - 12) & (rows / scale <= baseline + 5)


def test_a_pdf_source_card_shows_its_page_with_the_cited_sentence_yellow(start_chat, tides, media):
    lines, _ = tides
    at = start_chat([f"{lines[6]} [1]"], kb="tides")
    at.chat_input[0].set_value("Where is high water near pier 7?").run()
    assert at.expander and not at.get("image")  # nothing drawn until the user asks for the page
    card = at.expander[0]
    assert [t.label for t in card.toggle] == ["Show on the page"]
    # the sentence the card marks in its passage text is the one to be yellow on the page
    entry = int(re.search(r"<mark>Entry (\d\d) ", "".join(m.value for m in card.markdown)).group(1))
    at.toggle(key="t0-1-page").set_value(True).run()
    assert not at.exception and not at.warning
    (rgb,) = _images(at, media)
    rows = _yellow_rows(rgb)
    scale = rgb.shape[0] / PAGE_HEIGHT
    assert len(rows) > 200 and _line_band(rows, scale, entry - 1).mean() > 0.99  # on that line, nowhere else
    assert at.get("image")[0].captions[0].startswith("tides.pdf, p. 1: [1] highlighted")


def test_two_cards_citing_one_page_share_one_image_with_both_highlighted(tides, media):
    lines, _ = tides
    at = _cards_app("tides", _answer("tides", [lines[0], lines[-1]]))
    assert len(at.expander) == 2 and not at.get("image")
    at.toggle(key="t0-1-page").set_value(True).run()
    at.toggle(key="t0-2-page").set_value(True).run()
    assert not at.exception and not at.warning
    (rgb,) = _images(at, media)  # one image for the two cards
    rows = _yellow_rows(rgb)
    scale = rgb.shape[0] / PAGE_HEIGHT
    first, last = _line_band(rows, scale, 0), _line_band(rows, scale, len(lines) - 1)
    assert first.sum() > 100 and last.sum() > 100 and (first | last).mean() > 0.99
    assert at.get("image")[0].captions[0].startswith("tides.pdf, p. 1: [1] [2] highlighted")
    assert "This page is shown in source [1] above" in _texts(at)


def test_a_markdown_source_shows_its_section_with_the_sentence_marked(start_chat):
    at = start_chat([ZH_REPLY], language="zh")
    at.chat_input[0].set_value(ZH_QUESTION).run()
    card = at.expander[0]
    assert card.label.startswith(f"[1] {ZH_NAME}")
    assert [t.label for t in card.toggle] == ["在原文章节中查看"]
    marked = [m.value for m in at.markdown if "<mark>" in m.value]
    card.toggle[0].set_value(True).run()
    assert not at.exception and not at.get("image")
    now = [m.value for m in at.markdown if "<mark>" in m.value]
    assert len(now) == len(marked) + 1  # the section's text under the passage
    assert "<mark>市图书馆的普通读者每次最多可以借阅十二本书，" in now[-1]


@pytest.mark.parametrize("language, words", [
    ("en", "Cannot show the page: changed.pdf was moved, deleted or changed after it was added"),
    ("zh", "无法显示原页面：changed.pdf 在加入知识库后被移动、删除或修改过"),
])
def test_a_changed_original_is_a_warning_in_the_users_language(tides, tmp_path_factory, language, words):
    lines, pdf = tides
    folder = tmp_path_factory.mktemp("changed")
    copy = shutil.copy(pdf, folder / "changed.pdf")
    name = f"changed-{language}"
    with KnowledgeBase.open(name, settings=load_settings(), create=True) as kb:
        assert not kb.ingest(folder).failed
    with open(copy, "ab") as f:
        f.write(b"\n% edited after ingest\n")
    at = _cards_app(name, _answer(name, [lines[3]]), language)
    at.toggle(key="t0-1-page").set_value(True).run()
    assert not at.exception and not at.get("image")
    assert [w.value for w in at.warning if words in w.value]
