"""The app's pages through Streamlit's AppTest: what a user would see after each action.

One KB ('shared', two documents) is built per module; tests that change things make their own KB.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from app_fixtures import (
    APP,
    EN_NAME,
    EN_QUESTION,
    EN_REPLY,
    EN_TEXT,
    OFF_TOPIC,
    ZH_NAME,
    ZH_QUESTION,
    ZH_REPLY,
    ZH_TEXT,
    write_replies,
)
from streamlit.testing.v1 import AppTest


@pytest.fixture
def start(app_home, tmp_path, monkeypatch):
    """start(replies=[...], kb=NAME, page=FILE) -> a run AppTest (a fresh browser session)."""

    def _start(replies: list[str] | None = None, kb: str | None = "shared", page: str | None = None) -> AppTest:
        if replies is not None:  # a replies file of its own: the scripted model is shared per llm settings
            monkeypatch.setenv("KB_LLM__MODEL", str(write_replies(tmp_path / "replies.json", replies)))
        at = AppTest.from_file(str(APP), default_timeout=120)
        if kb:
            at.session_state["kb_current"] = kb
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception
        return at

    return _start


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "error", "text")
                     for e in getattr(at, kind))


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception
    return at


def test_answers_stream_with_numbered_source_cards_naming_the_file(start):
    at = ask(start([ZH_REPLY, EN_REPLY]), ZH_QUESTION)
    assert ZH_REPLY in texts(at)
    cards = [e.label for e in at.expander]
    assert cards and cards[0].startswith(f"[1] {ZH_NAME}") and "score" in cards[0] and "借阅规则" in cards[0]
    assert "<mark>市图书馆的普通读者每次最多可以借阅十二本书，" in texts(at)
    assert any(b.label == f"Download {ZH_NAME}" for b in at.get("download_button"))

    ask(at, EN_QUESTION)  # a second turn: the first stays on the page
    assert ZH_REPLY in texts(at) and EN_REPLY in texts(at) and len(at.chat_message) == 4

    at.button(key="new_chat").click().run()
    assert EN_REPLY not in texts(at) and not at.expander and not at.chat_message
    ask(at, EN_QUESTION)  # no history now, so the search is the question alone
    assert [e.label.split(" · ")[0] for e in at.expander] == [f"[1] {EN_NAME}"]
    assert "<mark>The harbor ferry to Lantern Island leaves every forty minutes" in texts(at)


def test_nothing_relevant_gives_the_refusal_message_and_no_sources(start):
    at = ask(start(["must not be said"]), OFF_TOPIC)
    assert "No passage in the knowledge base is relevant enough" in texts(at)
    assert "must not be said" not in texts(at) and not at.expander


def test_without_a_knowledge_base_the_chat_says_where_to_create_one(start, monkeypatch, tmp_path):
    monkeypatch.setenv("KB_HOME", str(tmp_path / "empty-home"))
    at = start(kb=None)
    assert "no knowledge base yet" in texts(at)
    assert not at.chat_input


def test_create_upload_list_view_chunks_and_delete_a_document(start, app_home):
    at = start(kb=None, page="kbs_page.py")
    at.text_input(key="new_kb_name").input("uploads-test")
    at.button[0].click().run()  # Create (a form's submit button)
    assert "Created knowledge base 'uploads-test'" in texts(at)
    at.file_uploader[0].set_value([(ZH_NAME, ZH_TEXT.encode(), "text/markdown"),
                                   ("../../../escape.md", EN_TEXT.encode(), "text/markdown"),
                                   ("broken.pdf", b"%PDF-1.4 not really a pdf", "application/pdf"),
                                   ("empty.txt", b"", "text/plain")]).run()
    at.button(key="add_files").click().run()
    shown = texts(at)
    assert f"✅ **added** — {ZH_NAME}: 1 chunks" in shown
    assert "✅ **added** — escape.md (sent as ../../../escape.md): 1 chunks" in shown
    assert "❌ **failed** — broken.pdf: not a readable PDF" in shown and "❌ **failed** — empty.txt: empty.txt is empty" in shown
    uploads = app_home / "uploads" / "uploads-test"
    assert sorted(p.name for p in uploads.iterdir()) == sorted([ZH_NAME, "escape.md"])  # a failed file is not kept
    assert not (app_home.parent / "escape.md").exists()

    table = at.table[0].value
    assert sorted(table["file"]) == sorted([ZH_NAME, "escape.md"]) and list(table["chunks"]) == [1, 1]

    at.file_uploader[0].set_value([(ZH_NAME, ZH_TEXT.encode(), "text/markdown")]).run()
    at.button(key="add_files").click().run()
    assert f"⏸️ **unchanged** — {ZH_NAME}" in texts(at)

    doc = next(e for e in at.expander if e.label.startswith("escape.md"))
    doc.toggle[0].set_value(True).run()
    assert any("Lantern Island" in str(t.value) for t in at.text)
    next(e for e in at.expander if e.label.startswith("escape.md")).button[0].click().run()
    assert "Removed escape.md from 'uploads-test'" in texts(at)
    assert list(at.table[0].value["file"]) == [ZH_NAME] and not (uploads / "escape.md").exists()


def test_reingest_a_folder_and_delete_a_knowledge_base(start, app_home, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.md").write_text(EN_TEXT, encoding="utf-8")
    at = start(kb=None, page="kbs_page.py")
    at.text_input(key="new_kb_name").input("folder-test")
    at.button[0].click().run()
    at.text_input(key="ingest_path").input(str(folder)).run()
    at.button(key="ingest_folder").click().run()
    assert "✅ **added** — a.md: 1 chunks" in texts(at)
    at.button(key="ingest_folder").click().run()
    assert "⏸️ **unchanged** — a.md" in texts(at)
    at.text_input(key="ingest_path").input(str(tmp_path / "nowhere")).run()
    at.button(key="ingest_folder").click().run()
    assert "does not exist" in texts(at) and not at.exception

    at.checkbox(key="confirm_delete_folder-test").check().run()
    next(b for b in at.button if b.label == "Delete knowledge base").click().run()
    assert "Deleted knowledge base 'folder-test'" in texts(at)
    assert not (app_home / "kbs" / "folder-test").exists()


def test_bad_input_is_a_message_not_a_stack_trace(start, monkeypatch, tmp_path):
    at = start(kb=None, page="kbs_page.py")
    at.button[0].click().run()  # no name typed
    assert "Type a name for the new knowledge base first." in [e.value for e in at.warning]
    at.text_input(key="new_kb_name").input("../etc")
    at.button[0].click().run()
    assert "invalid knowledge base name '../etc'" in texts(at) and not at.exception

    monkeypatch.setenv("KB_LLM__MODEL", str(tmp_path / "missing.json"))
    at = ask(start(), EN_QUESTION)
    assert any("must be a JSON file holding a list of replies" in e.value for e in at.error)


def test_sidebar_settings_apply_to_the_session_and_can_be_saved(start, app_home):
    at = start(page="kbs_page.py")
    at.slider(key="set_k").set_value(3)
    at.selectbox(key="set_mode").select("bm25")
    at.text_input(key="set_adapter").input("/models/my-lora").run()
    at.button(key="save_settings").click().run()
    saved = yaml.safe_load(Path(app_home / "config.yaml").read_text(encoding="utf-8"))
    assert saved["retrieval"] == {"mode": "bm25", "k": 3} and saved["answer"] == {"translate_query": "off"}
    assert saved["llm"]["adapter"] == "/models/my-lora" and saved["llm"]["backend"] == "scripted"
    Path(app_home / "config.yaml").unlink()

    at.selectbox(key="set_backend").select("openai").run()
    assert at.text_input(key="set_base_url") and at.text_input(key="set_api_key")
    at.selectbox(key="set_backend").select("chatglm2").run()
    assert at.selectbox(key="set_quantize").options == ["none", "4", "8"]


def test_the_embedded_model_answers_in_the_app(start, monkeypatch):
    # The real default model (SmolLM2 GGUF through llama.cpp), loaded once per process like `kb app` does;
    # what it writes varies, so the test checks that an answer and the right source reach the page.
    monkeypatch.setenv("KB_LLM__BACKEND", "gguf")
    monkeypatch.delenv("KB_LLM__MODEL")
    monkeypatch.setenv("KB_LLM__MAX_NEW_TOKENS", "48")
    at = ask(start(), EN_QUESTION)
    assert not at.error, [e.value for e in at.error]
    reply = at.chat_message[1]
    assert reply.name == "assistant" and len(" ".join(str(m.value) for m in reply.markdown).strip()) > 10
    assert at.expander and at.expander[0].label.split(" · ")[0].endswith(EN_NAME)
    assert "model backend: gguf" in texts(at)
