"""The app in its user's language: the two catalogues agree, the browser's Accept-Language picks Chinese or
English under app.language auto, app.language zh / en fix it, and the sidebar switches it for the session.

AppTest cannot send request headers (AppTest.context seeds only what a browser sends with each rerun), so the
Accept-Language test gives the session's client a header through the function st.context reads it from."""

from __future__ import annotations

import re
import string
from types import SimpleNamespace

import pytest
from app_fixtures import APP, ZH_NAME, ZH_QUESTION, ZH_REPLY
from streamlit.runtime import context as st_context
from streamlit.testing.v1 import AppTest

from kb.app.i18n import CATALOGUES, negotiate
from kb.app.i18n_en import STRINGS as EN
from kb.app.i18n_zh import STRINGS as ZH
from kb.config import load_settings
from kb.errors import ConfigError

HAN = re.compile(r"[\u4e00-\u9fff]")


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_both_catalogues_have_the_same_keys_and_placeholders():
    assert set(CATALOGUES) == {"zh", "en"}
    assert sorted(EN) == sorted(ZH), set(EN) ^ set(ZH)
    for key, text in EN.items():
        assert _placeholders(text) == _placeholders(ZH[key]), key


def test_the_chinese_catalogue_is_chinese():
    for key, text in ZH.items():
        assert HAN.search(text) and text != EN[key], key


def test_every_key_the_app_uses_is_in_the_catalogues():
    files = [p for p in APP.parent.glob("*.py") if not p.name.startswith("i18n_")]
    source = "\n".join(p.read_text(encoding="utf-8") for p in files)
    spaces = "|".join({key.split(".")[0] for key in EN})
    # t("chat.title"), and the keys kept in tables (CATCH_UP, _STATUS_NOTE) or built from a status
    used = set(re.findall(rf"""["']((?:{spaces})\.[a-z_]+)["']""", source))
    used |= {f"status.{s}" for s in ("added", "updated", "unchanged", "failed", "removed")}
    assert {"ingest.keywords", "chat.refused", "sidebar.answers_help"} <= used
    assert used == set(EN), (used - set(EN), set(EN) - used)  # none missing, none left over


@pytest.mark.parametrize("header, language", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("zh-TW", "zh"),
    ("ZH-hans-CN", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,zh;q=0.5", "zh"),  # the first of the two it names
    ("fr-FR,fr;q=0.9,en;q=0.8,zh;q=0.7", "en"),
    ("en;q=0.5, zh;q=0.9", "zh"),  # by q, not by order
    ("zh;q=0, en", "en"),  # q=0: not Chinese
    ("zh;q=bad, en-GB", "en"),
    ("de-DE", None),
    ("*", None),
    ("", None),
    (None, None),
])
def test_accept_language_picks_chinese_or_english(header, language):
    assert negotiate(header) == language


def test_the_setting_takes_auto_zh_or_en_only(monkeypatch):
    assert load_settings().app.language == "auto"
    monkeypatch.setenv("KB_APP__LANGUAGE", "zh")
    assert load_settings().app.language == "zh"
    monkeypatch.setenv("KB_APP__LANGUAGE", "fr")
    with pytest.raises(ConfigError, match="app.language"):
        load_settings()


@pytest.fixture
def run_app(app_home, monkeypatch):
    """run_app(language=..., accept_language=..., page=...) -> a run AppTest on KB 'shared'."""

    def _run(language: str | None = None, accept_language: str | None = None, page: str | None = None,
             replies: list[str] | None = None) -> AppTest:
        if language:
            monkeypatch.setenv("KB_APP__LANGUAGE", language)
        if accept_language:
            client = SimpleNamespace(headers=[("Accept-Language", accept_language)])
            monkeypatch.setattr(st_context, "_get_client_context", lambda: client)
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["kb_current"] = "shared"
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception
        return at

    return _run


def _chinese_chat(at: AppTest) -> None:
    assert [t.value for t in at.title] == ["向文档提问"]
    assert at.chat_input[0].placeholder == "输入关于文档的问题"
    assert at.button(key="new_chat").label == "新对话"
    assert at.sidebar.header[0].value == "设置"
    assert at.slider(key="set_k").label == "检索段落数（Top-k）"
    assert at.segmented_control(key="kb_language").value == "zh"


def test_app_language_zh_shows_the_app_in_chinese(run_app):
    at = run_app(language="zh")
    _chinese_chat(at)
    assert "知识库：**shared**" in at.caption[0].value

    at.switch_page("kbs_page.py").run()
    assert [t.value for t in at.title] == ["知识库"] and at.subheader[0].value == "知识库：shared"
    assert at.button(key="add_files").label == "添加到知识库"
    assert list(at.table[0].value.columns) == ["文件", "类型", "文本块", "导入时间", "所在文件夹"]
    assert any(e.label == f"{ZH_NAME} · 1 个文本块" for e in at.expander)


def test_a_chinese_answer_has_chinese_source_cards(run_app, monkeypatch, tmp_path):
    from app_fixtures import write_replies

    monkeypatch.setenv("KB_LLM__MODEL", str(write_replies(tmp_path / "replies.json", [ZH_REPLY])))
    at = run_app(language="zh")
    at.chat_input[0].set_value(ZH_QUESTION).run()
    assert not at.exception
    assert "引用来源" in [c.value for c in at.caption]
    card = at.expander[0].label
    assert card.startswith(f"[1] {ZH_NAME}") and " · 相关度 " in card
    assert any(b.label == f"下载 {ZH_NAME}" for b in at.get("download_button"))


def test_auto_follows_a_chinese_accept_language_header(run_app):
    _chinese_chat(run_app(accept_language="zh-CN,zh;q=0.9,en;q=0.8"))


def test_auto_follows_an_english_accept_language_header(run_app):
    at = run_app(accept_language="en-US,en;q=0.9,zh-CN;q=0.8")
    assert [t.value for t in at.title] == ["Ask your documents"]
    assert at.segmented_control(key="kb_language").value == "en"


def test_auto_without_a_header_follows_the_browser_locale_else_english(app_home):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.context = {"locale": "zh-CN"}
    at.run()
    assert [t.value for t in at.title] == ["向文档提问"]
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert [t.value for t in at.title] == ["Ask your documents"]


def test_app_language_en_wins_over_a_chinese_browser(run_app):
    at = run_app(language="en", accept_language="zh-CN,zh;q=0.9")
    assert [t.value for t in at.title] == ["Ask your documents"]
    assert at.chat_input[0].placeholder == "Ask a question about your documents"
    assert at.sidebar.header[0].value == "Settings"


def test_the_sidebar_switches_the_language_for_the_session(run_app):
    at = run_app(language="en")
    at.segmented_control(key="kb_language").set_value("zh").run()
    _chinese_chat(at)
    at.switch_page("kbs_page.py").run()  # the choice stays for the session's other page
    assert [t.value for t in at.title] == ["知识库"]
    at.segmented_control(key="kb_language").set_value("en").run()
    assert [t.value for t in at.title] == ["Knowledge bases"]
