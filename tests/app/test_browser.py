"""End to end in a real browser: the app started by `kb app` (which runs `streamlit run app/main.py`), driven by Playwright in Debian's headless
chromium. Create a KB, upload a Chinese and an English file, ask in each language, check the answer
and that the source card names the right file, delete a document; screenshots of the chat with its
citations go to the test's tmp folder (the path is printed). A browser whose language is Chinese
(Accept-Language zh-CN) gets the app in Chinese (app.language auto) and a screenshot of it too; in it, the
README's scanned-PDF question's source card is opened on its page (the 长江厅 row highlighted on page 2 of the
sample scan, found by OCR at view time) and screenshotted (evidence-zh.png).

Skipped when /usr/bin/chromium (or the playwright package) is missing, unless CI_REQUIRE_BROWSER=1
(.ci/run sets it after installing chromium), where that is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import (
    EN_NAME,
    EN_QUESTION,
    EN_REPLY,
    ZH_NAME,
    ZH_QUESTION,
    ZH_REPLY,
    app_env,
    write_docs,
    write_replies,
)

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000
SCAN = Path(__file__).resolve().parents[2] / "docs" / "samples" / "会议室与访客管理规定-扫描件.pdf"
SCAN_QUESTION = "长江厅能坐多少人？"  # the README's scanned-PDF question
SCAN_REPLY = "长江厅可以容纳20人[1]。"


def _require_browser():
    """playwright's sync API, or a skip (a failure when CI_REQUIRE_BROWSER=1)."""
    problem = None if CHROMIUM.exists() else f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "the playwright package is not installed (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CI_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One `streamlit run` of the app for the whole module: its URL and a folder with the two documents."""
    _require_browser()
    root = tmp_path_factory.mktemp("browser")
    docs = write_docs(root / "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    # One reply per question, in the order the tests ask them (the scripted model then repeats the last).
    env.update(app_env(root / "kbhome", write_replies(root / "replies.json",
                                                      [ZH_REPLY, EN_REPLY, ZH_REPLY, SCAN_REPLY])))
    port = _free_port()
    log = open(root / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb.cli", "app", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, root / "streamlit.log")
        yield url, docs
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"streamlit did not start within 60 s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def playwright(server):
    sync_playwright = _require_browser()
    with sync_playwright() as p:
        yield p


def _launch(playwright, language: str):
    """Headless chromium whose language is `language`: --accept-lang sets both its Accept-Language header (the
    websocket's too, which Playwright's locale option leaves en-US) and navigator.language."""
    # Playwright gives the browser a fresh temporary profile (it refuses --user-data-dir in launch()).
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=[*FLAGS, f"--accept-lang={language}"])


def _tab(browser):
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.set_default_timeout(TIMEOUT_MS)
    return tab


@pytest.fixture(scope="module")
def page(playwright):
    browser = _launch(playwright, "en-US,en")
    yield _tab(browser)
    browser.close()


def _ask(page, question: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")


def _open_card(card) -> None:
    """Expand a source card and wait until its passage (with the highlighted sentence) is on screen."""
    from playwright.sync_api import expect

    card.page.get_by_test_id("stStatusWidget").wait_for(state="detached")  # the answer's run has ended
    card.locator("summary").click()
    expect(card.locator("mark")).to_be_visible()


def test_upload_ask_in_both_languages_and_delete(server, page, tmp_path):
    url, docs = server
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)  # the first actions load the embedding model

    page.goto(f"{url}/kbs")
    page.get_by_label("New knowledge base").fill("browser")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("Created knowledge base 'browser'.")).to_be_visible()

    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(p) for p in docs])
    for name in (ZH_NAME, EN_NAME):
        expect(page.get_by_test_id("stFileUploader")).to_contain_text(name)
    page.get_by_role("button", name="Add to knowledge base").click()
    expect(page.get_by_text(f"added — {ZH_NAME}: 1 chunks")).to_be_visible()
    expect(page.get_by_text(f"added — {EN_NAME}: 1 chunks")).to_be_visible()

    page.get_by_role("link", name="Chat").click()
    _ask(page, ZH_QUESTION)
    expect(page.get_by_text(ZH_REPLY)).to_be_visible()
    card = page.get_by_test_id("stExpander").first
    expect(card).to_contain_text(f"[1] {ZH_NAME}")
    _open_card(card)
    expect(card.locator("mark")).to_contain_text("最多可以借阅十二本书")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page.wait_for_timeout(600)
    page.screenshot(path=str(shots / "chat-zh.png"), full_page=True)

    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_text(ZH_REPLY)).to_have_count(0)
    _ask(page, EN_QUESTION)
    expect(page.get_by_text(EN_REPLY)).to_be_visible()
    card = page.get_by_test_id("stExpander").first
    expect(card).to_contain_text(f"[1] {EN_NAME}")
    _open_card(card)
    expect(card.locator("mark")).to_contain_text("leaves every forty minutes")
    expect(card.get_by_role("button", name=f"Download {EN_NAME}")).to_be_visible()
    page.wait_for_timeout(600)  # the card's opening animation
    page.screenshot(path=str(shots / "chat-en.png"), full_page=True)
    print(f"\nscreenshots of the chat with citations: {shots}")

    page.get_by_role("link", name="Knowledge bases").click()
    doc = page.get_by_test_id("stExpander").filter(has_text=f"{EN_NAME} · 1 chunks")
    doc.locator("summary").click()
    doc.get_by_role("button", name="Delete document").click()
    expect(page.get_by_text(f"Removed {EN_NAME} from 'browser'.")).to_be_visible()
    expect(page.get_by_test_id("stExpander").filter(has_text=EN_NAME)).to_have_count(0)
    expect(page.get_by_test_id("stTable")).not_to_contain_text(EN_NAME)
    expect(page.get_by_test_id("stTable")).to_contain_text(ZH_NAME)


def test_a_chinese_browser_gets_the_app_in_chinese(server, playwright, tmp_path):
    url, docs = server
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    browser = _launch(playwright, "zh-CN,zh")  # app.language is auto (the default) in this server
    page = _tab(browser)
    try:
        page.goto(f"{url}/kbs")
        expect(page.get_by_role("heading", name="知识库", exact=True)).to_be_visible()
        page.get_by_label("新建知识库").fill("browser-zh")
        page.get_by_role("button", name="新建", exact=True).click()
        expect(page.get_by_text("已新建知识库“browser-zh”。")).to_be_visible()
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(docs[0])])
        expect(page.get_by_test_id("stFileUploader")).to_contain_text(ZH_NAME)
        page.get_by_role("button", name="添加到知识库").click()
        expect(page.get_by_text(f"已添加 — {ZH_NAME}: 1 个文本块")).to_be_visible()

        page.get_by_role("link", name="对话").click()
        expect(page.get_by_role("heading", name="向文档提问")).to_be_visible()
        expect(page.get_by_test_id("stSidebar")).to_contain_text("设置")
        _ask(page, ZH_QUESTION)
        expect(page.get_by_text(ZH_REPLY)).to_be_visible()
        expect(page.get_by_text("引用来源", exact=True)).to_be_visible()
        card = page.get_by_test_id("stExpander").first
        expect(card).to_contain_text(f"[1] {ZH_NAME}")
        expect(card).to_contain_text("相关度")
        _open_card(card)
        expect(card.locator("mark")).to_contain_text("最多可以借阅十二本书")
        expect(card.get_by_role("button", name=f"下载 {ZH_NAME}")).to_be_visible()
        shots = tmp_path / "screenshots"
        shots.mkdir()
        page.wait_for_timeout(600)  # the card's opening animation
        page.screenshot(path=str(shots / "chat-zh-ui.png"), full_page=True)
        print(f"\nscreenshot of the app in Chinese: {shots / 'chat-zh-ui.png'}")
    finally:
        browser.close()


def test_a_source_card_opens_its_page_with_the_cited_row_highlighted(server, playwright, tmp_path):
    url, _ = server
    from playwright.sync_api import expect

    from kb.ingest.ocr import OcrOptions, available

    if not available(OcrOptions()).engine:
        pytest.skip("the sample scan needs an OCR engine (pip install -e '.[ocr]')")
    expect.set_options(timeout=TIMEOUT_MS)
    browser = _launch(playwright, "zh-CN,zh")
    page = browser.new_page(viewport={"width": 1280, "height": 1800})  # the question, the answer and the page
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(f"{url}/kbs")
        page.get_by_label("新建知识库").fill("browser-scan")
        page.get_by_role("button", name="新建", exact=True).click()
        expect(page.get_by_text("已新建知识库“browser-scan”。")).to_be_visible()
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(SCAN)])
        page.get_by_role("button", name="添加到知识库").click()
        expect(page.get_by_text(f"已添加 — {SCAN.name}")).to_be_visible(timeout=240_000)  # OCR of 3 pages

        page.get_by_role("link", name="对话").click()
        _ask(page, SCAN_QUESTION)
        expect(page.get_by_text("长江厅可以容纳20人")).to_be_visible()
        card = page.get_by_test_id("stExpander").first
        expect(card).to_contain_text(f"[1] {SCAN.name} · 第 2 页")
        _open_card(card)
        expect(card.locator("mark")).to_contain_text("长江厅")
        card.get_by_text("在原页面中查看").click()
        image = card.get_by_test_id("stImage")
        expect(image.locator("img")).to_be_visible(timeout=120_000)  # the page OCR'd when first viewed
        expect(image).to_contain_text("第 2 页：已标出 [1]")
        page.get_by_test_id("stStatusWidget").wait_for(state="detached")
        page.get_by_test_id("stChatMessage").first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(600)
        shot = tmp_path / "evidence-zh.png"
        page.screenshot(path=str(shot))
        from PIL import Image

        rgb = Image.open(shot).convert("RGB")
        yellow = [p for p in rgb.getdata() if p[0] > 235 and p[1] > 215 and 90 < p[2] < 190]
        assert len(yellow) > 500, "no highlight on the screenshot"
        print(f"\nscreenshot of a source card's page with its highlight: {shot}")
    finally:
        browser.close()
