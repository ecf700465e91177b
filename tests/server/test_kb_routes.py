"""The KB routes through the real server on loopback: a full round trip, the API key, and the 4xx answers
a caller can act on (each with a message that says what was wrong)."""

from __future__ import annotations

import httpx
import pytest
from serverkit import running, server_settings

NOTE = "# Lab notes\n\nThe centrifuge in room 12 must be balanced before every run.\n"
CN = "实验室的离心机每次运行前都必须配平。"


def test_round_trip_create_upload_search_ask_delete(client, sample_home):
    r = client.post("/v1/kbs", json={"name": "trip"})
    assert r.status_code == 201 and r.json()["documents"] == 0
    assert client.post("/v1/kbs", json={"name": "trip"}).status_code == 409
    files = [("file", ("notes.md", NOTE.encode(), "text/markdown")),
             ("file", ("离心机.txt", CN.encode("gbk"), "text/plain"))]
    r = client.post("/v1/kbs/trip/documents", files=files)
    assert r.status_code == 200, r.text
    report = r.json()
    assert [f["status"] for f in report["files"]] == ["added", "added"] and report["chunks_added"] >= 2
    stored = report["files"][0]["path"]
    assert stored.startswith(str(sample_home / "uploads" / "trip"))
    assert "trip" in [k["name"] for k in client.get("/v1/kbs").json()["data"]]

    docs = client.get("/v1/kbs/trip/documents").json()["data"]
    assert sorted(d["title"] or d["path"] for d in docs) and len(docs) == 2
    hits = client.post("/v1/kbs/trip/search", json={"query": "centrifuge balanced", "k": 3}).json()["hits"]
    assert hits[0]["path"] == stored and "room 12" in hits[0]["text"]
    hits = client.post("/v1/kbs/trip/search", json={"query": "离心机 配平", "mode": "bm25"}).json()["hits"]
    assert hits[0]["path"].endswith("离心机.txt")

    r = client.post("/v1/kbs/trip/ask", json={"question": "When must the centrifuge be balanced?"})
    answer = r.json()
    assert r.status_code == 200 and answer["status"] == "answered"
    assert answer["citations"][0]["path"] == stored and answer["passages"]
    quoted = client.post("/v1/kbs/trip/ask", json={"question": "When must the centrifuge be balanced?",
                                                    "answer_mode": "extract"}).json()
    assert quoted["answer_mode"] == "extract" and "balanced before every run" in quoted["text"]
    r = client.post("/v1/chat/completions", json={"model": "kb:trip", "answer_mode": "extract", "messages": [
        {"role": "user", "content": "When must the centrifuge be balanced?"}]})
    assert "balanced before every run" in r.json()["choices"][0]["message"]["content"]
    assert r.json()["usage"]["completion_tokens"] == 0  # no model wrote it

    doc = next(d for d in docs if d["path"] == stored)
    r = client.delete(f"/v1/kbs/trip/documents/{doc['doc_id']}")
    assert r.status_code == 200 and r.json()["data"][0]["doc_id"] == doc["doc_id"]
    assert [d["doc_id"] for d in client.get("/v1/kbs/trip/documents").json()["data"]] != [doc["doc_id"]]
    assert len(client.get("/v1/kbs/trip/documents").json()["data"]) == 1
    assert not (sample_home / "uploads" / "trip" / "notes.md").exists()
    assert client.delete(f"/v1/kbs/trip/documents/{doc['doc_id']}").status_code == 404

    assert client.delete("/v1/kbs/trip").json() == {"deleted": "trip"}
    r = client.get("/v1/kbs/trip")
    assert r.status_code == 404 and "no knowledge base named 'trip'" in r.json()["error"]["message"]
    assert not (sample_home / "uploads" / "trip").exists()


def test_upload_name_cannot_escape_the_uploads_folder(client, sample_home):
    client.post("/v1/kbs", json={"name": "escape"})
    try:
        r = client.post("/v1/kbs/escape/documents",
                        files={"file": ("../../../escaped.md", NOTE.encode(), "text/markdown")})
        assert r.status_code == 200, r.text
        assert r.json()["files"][0]["path"] == str((sample_home / "uploads" / "escape" / "escaped.md").resolve())
        assert not (sample_home.parent / "escaped.md").exists()
    finally:
        client.delete("/v1/kbs/escape")


def test_every_route_but_health_needs_the_key(base_url):
    with httpx.Client(base_url=base_url) as anon:
        assert anon.get("/health").json() == {"status": "ok"}
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/kbs"), ("POST", "/v1/kbs/samples/search"),
                             ("POST", "/v1/chat/completions"), ("DELETE", "/v1/kbs/samples")]:
            r = anon.request(method, path, json={})
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in r.json()["error"]["message"]
        r = anon.get("/v1/kbs", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/v1/kbs/nope/search", {"query": "x"}, 404, "no knowledge base named 'nope'"),
    ("POST", "/v1/kbs/samples/search", {"query": "  "}, 422, "query: the search query is empty"),
    ("POST", "/v1/kbs/samples/ask", {"question": ""}, 422, "question: the question is empty"),
    ("POST", "/v1/kbs/samples/ask", {}, 422, "question: Field required"),
    ("POST", "/v1/kbs/samples/search", {"query": "x", "mode": "fuzzy"}, 422, "mode: Input should be"),
    ("POST", "/v1/kbs", {"name": "../etc"}, 422, "name: invalid knowledge base name: use 1-64 letters"),
    ("GET", "/v1/kbs/bad name!", None, 422, "invalid knowledge base name"),
    ("POST", "/v1/chat/completions", {"model": "kb:samples", "messages": [{"role": "assistant", "content": "hi"}]},
     400, "last message must come from the user"),
])
def test_bad_input_gets_a_clear_4xx(client, method, path, body, status, says):
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


def test_malformed_json_is_a_400(client):
    r = client.post("/v1/kbs/samples/search", content=b'{"query": "x",', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]


def test_unsupported_file_type_is_a_415_naming_what_is_readable(client):
    r = client.post("/v1/kbs/samples/documents", files={"file": ("tool.exe", b"MZ\x90\x00", "application/octet-stream")})
    assert r.status_code == 415
    message = r.json()["error"]["message"]
    assert "unsupported file type '.exe'" in message and ".pdf" in message and ".md" in message


def test_unparseable_upload_is_a_422_with_the_reason(client):
    client.post("/v1/kbs", json={"name": "broken"})
    try:
        r = client.post("/v1/kbs/broken/documents", files={"file": ("scan.pdf", b"%PDF-1.4 garbage", "application/pdf")})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("scan.pdf: ")
        assert client.get("/v1/kbs/broken/documents").json()["data"] == []
    finally:
        client.delete("/v1/kbs/broken")


def test_oversize_upload_is_a_413_naming_the_limit(sample_home, tmp_path):
    settings = server_settings(sample_home, tmp_path, server={"max_upload_mb": 0.05})
    with running(settings) as url, httpx.Client(base_url=url, headers={"Authorization": "Bearer test-key-123"}) as c:
        big = b"word " * 40_000  # 200 kB
        r = c.post("/v1/kbs/samples/documents", files={"file": ("big.txt", big, "text/plain")})
        assert r.status_code == 413
        assert "at most 0.05 MB" in r.json()["error"]["message"] and "max_upload_mb" in r.json()["error"]["message"]

        def chunked():  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\r\n"
            yield big
            yield b"\r\n--b--\r\n"
        r = c.post("/v1/kbs/samples/documents", content=chunked(),
                   headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and "max_upload_mb" in r.json()["error"]["message"]
        assert not (sample_home / "uploads" / "samples" / "big.txt").exists()


def test_an_uploaded_photo_is_read_by_ocr_and_answers_with_its_source(client, tmp_path):
    import scans

    if scans.font_path() is None:
        pytest.skip("needs Debian's fonts-wqy-zenhei to draw the photo")
    photo = tmp_path / "notice.jpg"
    scans.photo_of(scans.render_page(["本周五下午三点，三楼会议室举行消防演练，请全体员工参加。"], size=(1200, 500),
                                     margin=60, seed=5), seed=6).save(photo, quality=75)
    client.post("/v1/kbs", json={"name": "photos"})
    try:
        r = client.post("/v1/kbs/photos/documents", files={"file": ("notice.jpg", photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        (result,) = r.json()["files"]
        assert (result["status"], result["ocr_pages"]) == ("added", 1) and result["chunks"] >= 1
        answer = client.post("/v1/kbs/photos/ask", json={"question": "消防演练在哪里举行？",
                                                          "answer_mode": "extract"}).json()
        assert answer["status"] == "answered" and "三楼会议室" in answer["text"]
        assert answer["citations"][0]["path"] == result["path"]
    finally:
        client.delete("/v1/kbs/photos")
