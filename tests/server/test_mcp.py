"""`kb mcp` through the MCP SDK's own client: a real `kb mcp` subprocess over stdio, and the Streamable HTTP app
under uvicorn (in this process, so that a test can look at the model a call used). KB 'samples' is docs/samples.

Answers on the default settings are quoted (answer.mode auto with the embedded English-only model: extract for a
Chinese question); the HTTP tests that need a model writing register a scripted or a slow one."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from PIL import Image
from serverkit import KEY, SAMPLES, free_port, server_settings, serving

from kb.answer.service import AnswerService
from kb.llm.base import ChatBackend, register_backend
from kb.server.mcp_server import build, http_app

ZH = "一线城市出差住宿每晚最多报销多少？"
EN = "How long are hourly snapshots kept?"
TIMEOUT = 300  # seconds a call may take before the client gives up (a test fails rather than hangs)
READ_TOOLS = {"list_knowledge_bases", "search", "ask", "read_passage"}


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_HOME=str(home), KB_CONFIG=str(home / "no-config.yaml"), **extra)
    return env


def _stdio(home: Path, *args: str, **env: str) -> Client:
    """The SDK's client on a `kb mcp` subprocess."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "kb.cli", "mcp", *args], env=_env(home, **env))
    return Client(params, read_timeout_seconds=TIMEOUT)


def _text(result) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


def test_stdio_kb_mcp_answers_both_languages_with_citations(sample_home):
    """A real `kb mcp` subprocess: the tools listed (no ingest without --allow-write) with their annotations, each
    tool's happy path in Chinese and English, and the errors a client meets, as tool errors that say what to do."""

    async def main() -> None:
        async with _stdio(sample_home) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == READ_TOOLS
            for tool in tools.values():
                assert tool.annotations.read_only_hint is True and tool.annotations.destructive_hint is False
                assert tool.output_schema is not None and tool.description
            assert set(tools["search"].input_schema["required"]) == {"query"}

            listed = await client.call_tool("list_knowledge_bases", {})
            kbs = listed.structured_content["knowledge_bases"]
            assert [k["name"] for k in kbs] == ["samples"]
            assert kbs[0]["documents"] == 6 and kbs[0]["chunks"] > 0
            assert set(kbs[0]["languages"]) == {"en", "zh"} and "multilingual-e5-small" in kbs[0]["embedders"]

            found = await client.call_tool("search", {"query": ZH, "kb": "samples", "k": 3})
            assert not found.is_error
            first = found.structured_content["passages"][0]
            assert first["file"].endswith("差旅报销制度.md") and "600 元" in first["text"]
            assert first["section"].endswith("住宿标准") and first["id"].startswith("samples:")
            assert "600 元" in _text(found) and first["id"] in _text(found)

            asked = await client.call_tool("ask", {"question": ZH})
            answer = asked.structured_content
            assert not asked.is_error and answer["status"] == "answered", _text(asked)
            assert "600 元" in answer["text"] and "[1]" in answer["text"]
            cited = answer["citations"][0]
            assert cited["file"].endswith("差旅报销制度.md") and cited["passage_id"] == first["id"]
            assert [source["id"] for source in answer["sources"]] == [first["id"]]  # once, though cited twice
            assert "600 元" in answer["sources"][0]["text"]
            assert "Sources:" in _text(asked) and "差旅报销制度.md" in _text(asked)

            asked = await client.call_tool("ask", {"question": EN, "kb": "samples"})
            answer = asked.structured_content
            assert answer["status"] == "answered" and "two days" in answer["text"]
            assert any(c["file"].endswith("backup-policy.html") for c in answer["citations"])

            read = await client.call_tool("read_passage", {"id": first["id"], "neighbours": 1})
            around = read.structured_content
            assert around["passages"][around["index"]]["id"] == first["id"]
            assert 2 <= len(around["passages"]) <= 3
            assert all(p["file"] == first["file"] for p in around["passages"])

            # page_image: the scan's page as a PNG with the passage highlighted; a Markdown passage gets a note
            scan = await client.call_tool("search", {"query": "长江厅能坐多少人？", "kb": "samples", "k": 5})
            hit = next(p for p in scan.structured_content["passages"] if p["file"].endswith("扫描件.pdf"))
            shown = await client.call_tool("read_passage", {"id": hit["id"], "neighbours": 0, "page_image": True})
            images = [block for block in shown.content if block.type == "image"]
            assert not shown.is_error and len(images) == 1 and images[0].mime_type == "image/png"
            page = Image.open(io.BytesIO(base64.b64decode(images[0].data))).convert("RGB")
            pixels = np.asarray(page).reshape(-1, 3).astype(int)
            yellow = (pixels[:, 0] > 200) & (pixels[:, 1] > 200) & (pixels[:, 2] < 150)
            assert page.width > 500 and yellow.sum() > 200  # a highlight is drawn
            noted = await client.call_tool("read_passage", {"id": first["id"], "neighbours": 0, "page_image": True})
            assert not noted.is_error and not [b for b in noted.content if b.type == "image"]
            assert "No page image" in _text(noted)

            # The errors: each a tool error whose text says what to do.
            unknown = await client.call_tool("search", {"query": "x", "kb": "nope"})
            assert unknown.is_error and "no knowledge base named 'nope'" in _text(unknown)
            assert "samples" in _text(unknown)
            bad_id = await client.call_tool("read_passage", {"id": "42"})
            assert bad_id.is_error and "samples:42" in _text(bad_id)
            gone = await client.call_tool("read_passage", {"id": "samples:1"})
            assert gone.is_error and "Search again" in _text(gone)
            empty = await client.call_tool("search", {"query": ""})
            assert empty.is_error and "query" in _text(empty)
            for result in (unknown, bad_id, gone, empty):
                assert "Traceback" not in _text(result)
            ingest = await client.call_tool("ingest", {"path": str(SAMPLES)})
            assert ingest.is_error and "ingest" in _text(ingest)

    anyio.run(main)


def test_stdio_search_is_kb_search(sample_home):
    """One retrieval path: the MCP search returns what `kb search --json` prints for the same query and k."""
    env = _env(sample_home)
    printed = subprocess.run([sys.executable, "-m", "kb.cli", "search", EN, "--kb", "samples", "-k", "5", "--json"], env=env,
                             capture_output=True, text=True, timeout=300, check=True).stdout
    expected = [(f"samples:{h['chunk_id']}", round(h["score"], 4)) for h in json.loads(printed)]

    async def main():
        async with _stdio(sample_home) as client:
            return (await client.call_tool("search", {"query": EN, "k": 5})).structured_content["passages"]

    passages = anyio.run(main)
    assert [(p["id"], p["score"]) for p in passages] == expected


def test_allow_write_offers_ingest_into_a_new_kb(sample_home, tmp_path):
    """With --allow-write the ingest tool is listed (not read-only, not destructive) and builds a KB that the
    other tools then read; progress reaches a client that asked for it."""
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "vpn.md").write_text("# VPN\n\nThe VPN gateway is vpn.example.org; connect with WireGuard.\n",
                                 encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def main():
        async with _stdio(home, "--allow-write", KB_SERVER__MAX_QUEUED="2") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == READ_TOOLS | {"ingest"}
            hints = tools["ingest"].annotations
            assert hints.read_only_hint is False and hints.destructive_hint is False and hints.idempotent_hint
            missing = await client.call_tool("ingest", {"path": str(tmp_path / "nowhere"), "kb": "notes"})
            assert missing.is_error and "absolute path" in _text(missing)
            added = await client.call_tool("ingest", {"path": str(docs), "kb": "notes"},
                                           progress_callback=on_progress)
            assert not added.is_error, _text(added)
            assert added.structured_content["counts"] == {"added": 1} and added.structured_content["chunks_added"] >= 1
            again = await client.call_tool("ingest", {"path": str(docs), "kb": "notes"})
            assert again.structured_content["counts"] == {"unchanged": 1}
            found = await client.call_tool("search", {"query": "Which VPN gateway?", "kb": "notes", "k": 1})
            return found.structured_content["passages"]

    passages = anyio.run(main)
    assert "vpn.example.org" in passages[0]["text"]
    assert progress and progress[-1][0] == 1 and "vpn.md" in (progress[-1][2] or "")


# -- Streamable HTTP --------------------------------------------------------------------------------------
class WordsModel(ChatBackend):
    """Writes 'word0 word1 ...' (then a citation), one word every `delay` seconds; records each stream."""

    name = "words"
    instances: list[WordsModel] = []

    def __init__(self, words: int = 5, delay: float = 0.01) -> None:
        self.words, self.delay = words, delay
        self.streams: list[dict] = []
        self.began = threading.Event()
        WordsModel.instances.append(self)

    def stream(self, messages, **gen):
        record = {"sent": 0, "finished": False, "ended": threading.Event()}
        self.streams.append(record)
        self.began.set()
        try:
            for i in range(self.words):
                time.sleep(self.delay)
                record["sent"] += 1
                yield f"word{i} "
            yield "Hourly snapshots are kept for two days [1]."
            record["finished"] = True
        finally:
            record["ended"].set()

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _quiet_models() -> None:
    """Forget that any WordsModel began writing (the process shares one model per llm settings: kb.llm.shared)."""
    for model in WordsModel.instances:
        model.began.clear()


async def _until_writing() -> WordsModel:
    """The WordsModel that began writing since _quiet_models (60 s at most: a test never hangs)."""
    with anyio.fail_after(60):
        while True:
            for model in WordsModel.instances:
                if model.began.is_set():
                    return model
            await anyio.sleep(0.01)


@pytest.fixture(scope="module")
def mcp_url(sample_home, tmp_path_factory):
    """`kb mcp --http`'s app with an API key and a model that writes slowly enough to be cancelled."""
    register_backend("words", lambda settings: WordsModel(words=400, delay=0.01))
    WordsModel.instances.clear()
    settings = server_settings(sample_home, tmp_path_factory.mktemp("mcp"), llm={"backend": "words", "model": ""})
    service = AnswerService(settings)
    with serving(http_app(service, "127.0.0.1")) as url:
        yield f"{url}/mcp"
    service.close()


def _client(url: str, key: str | None = KEY) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    import httpx2

    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=120)),
                  read_timeout_seconds=TIMEOUT)


def test_http_needs_the_key(mcp_url):
    assert httpx.post(mcp_url, json={}, timeout=10).status_code == 401
    wrong = httpx.post(mcp_url, json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and "server.api_key" in wrong.json()["error"]["message"]

    async def connect(key):
        async with _client(mcp_url, key) as client:
            return [t.name for t in (await client.list_tools()).tools]

    with pytest.raises(Exception):  # noqa: B017 - the SDK's error for a refused connection varies by transport
        anyio.run(connect, "wrong-key")
    assert set(anyio.run(connect, KEY)) == READ_TOOLS


def test_http_ask_streams_progress_and_generates(mcp_url):
    messages: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async def main():
        async with _client(mcp_url) as client:
            return await client.call_tool("ask", {"question": EN, "answer_mode": "generate"},
                                          progress_callback=on_progress)

    result = anyio.run(main)
    answer = result.structured_content
    assert not result.is_error and answer["answer_mode"] == "generate" and answer["status"] == "answered"
    assert answer["citations"] and answer["citations"][0]["file"].endswith("backup-policy.html")
    streamed = "".join(messages)
    assert streamed.startswith("word0 word1") and "two days" in streamed and len(messages) > 1


def test_cancelling_an_ask_stops_the_model(mcp_url):
    """A client that cancels mid-answer stops the model after its current word (the model is freed for the next)."""
    async def main():
        async with _client(mcp_url) as client:
            _quiet_models()
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "ask", {"question": EN, "answer_mode": "generate"})
                model = await _until_writing()
                tg.cancel_scope.cancel()  # the client abandons the call: the SDK sends notifications/cancelled
            record = model.streams[-1]
            # While the session is still open: the cancellation alone stopped the model.
            assert await anyio.to_thread.run_sync(record["ended"].wait, 60), "the model never stopped"
            assert not record["finished"] and record["sent"] < 400
            after = await client.call_tool("ask", {"question": EN, "answer_mode": "extract"})
            assert not after.is_error and after.structured_content["status"] == "answered"

    anyio.run(main)


# -- errors, in process (the SDK's client on the server object) ---------------------------------------------
def _in_process(settings, **options) -> Client:
    return Client(build(AnswerService(settings), **options), read_timeout_seconds=TIMEOUT)


def test_no_chat_model_says_a_quote_is_still_there(sample_home, tmp_path):
    from kb.config import Settings

    settings = Settings(home=sample_home, llm={"backend": "gguf", "model": str(tmp_path / "missing.gguf")})

    async def main():
        async with _in_process(settings) as client:
            failed = await client.call_tool("ask", {"question": EN, "answer_mode": "generate"})
            quoted = await client.call_tool("ask", {"question": EN, "answer_mode": "extract"})
            return failed, quoted

    failed, quoted = anyio.run(main)
    assert failed.is_error and "answer_mode='extract'" in _text(failed) and "missing.gguf" in _text(failed)
    assert not quoted.is_error and quoted.structured_content["status"] == "answered"


def test_a_kb_being_written_is_busy_and_only_kb_is_served(sample_home, tmp_path):
    from kb import KnowledgeBase
    from kb.config import Settings

    settings = Settings(home=sample_home)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha.", encoding="utf-8")

    async def main():
        async with _in_process(settings, only="samples", allow_write=True) as client:
            other = await client.call_tool("search", {"query": "x", "kb": "elsewhere"})
            assert other.is_error and "serves only knowledge base 'samples'" in _text(other)
            with KnowledgeBase.open("samples", settings=settings, create=False) as kb, kb._handle.writer(0):
                busy = await client.call_tool("ingest", {"path": str(docs)})
            assert busy.is_error and "busy" in _text(busy) and "Try again" in _text(busy)
            listed = await client.call_tool("list_knowledge_bases", {})
            assert [k["name"] for k in listed.structured_content["knowledge_bases"]] == ["samples"]

    anyio.run(main)


# -- the command ------------------------------------------------------------------------------------------
def _kb_mcp(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kb.cli", "mcp", *args], env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kb_mcp_http_on_the_network_needs_a_key_or_no_key(sample_home):
    refused = _kb_mcp(sample_home, "--http", "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "server.api_key" in err and "--no-key" in err
    assert "Traceback" not in err

    port = free_port()
    started = _kb_mcp(sample_home, "--http", "--host", "0.0.0.0", "--port", str(port), "--no-key")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert started.poll() is None, started.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "kb mcp --http did not answer within 120 s"
            try:  # no key needed: an MCP initialize answers
                reply = httpx.post(f"http://127.0.0.1:{port}/mcp", timeout=5, json={
                    "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                        "protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "test", "version": "1"}}},
                    headers={"Accept": "application/json, text/event-stream"})
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert reply.status_code == 200, reply.text
    finally:
        started.terminate()
        _, err = started.communicate(timeout=30)
    assert "no API key" in err


def test_kb_mcp_names_the_kbs_when_asked_for_a_missing_one(sample_home):
    proc = _kb_mcp(sample_home, "--kb", "nope")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no knowledge base named 'nope'" in err and "samples" in err


def test_ask_past_max_queued_is_refused_with_when_to_come_back(sample_home, tmp_path):
    """server.max_queued bounds MCP asks too (the answer service's one bound); extract answers are not counted."""
    register_backend("words", lambda settings: WordsModel(words=400, delay=0.01))
    settings = server_settings(sample_home, tmp_path, llm={"backend": "words", "model": ""}, server={"max_queued": 1})

    async def main():
        async with _in_process(settings) as client:
            _quiet_models()
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "ask", {"question": EN, "answer_mode": "generate"})
                await _until_writing()
                busy = await client.call_tool("ask", {"question": EN, "answer_mode": "generate"})
                quoted = await client.call_tool("ask", {"question": EN, "answer_mode": "extract"})
                tg.cancel_scope.cancel()
            return busy, quoted

    busy, quoted = anyio.run(main)
    assert busy.is_error and "busy" in _text(busy) and "try again in about" in _text(busy)
    assert not quoted.is_error
