"""GET /v1/kbs/{kb}/passages/{id}/view: the cited passage drawn on its page (PNG), or its boxes (?format=json).

A server of its own over a KB holding tests/evidence_docs.py's PDF (sentences at known boxes) and a Markdown file:
the PNG is yellow where the Chinese sentence was drawn, the JSON's boxes are there in points and in pixels, and the
key rule, unknown ids, traversal-looking ids, formats without pages and an edited original get clear answers.
"""

from __future__ import annotations

import pytest
from evidence_docs import EN, ZH, iou, make_pdf, union, yellow_pixels
from serverkit import KEY, running, server_settings

from kb import KnowledgeBase


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("evidence-home")
    docs = tmp_path_factory.mktemp("evidence-docs")
    known = make_pdf(docs / "lighthouse.pdf")
    (docs / "notes.md").write_text("# Notes\n\nThe ferry leaves at seven. Tickets are sold on board.\n",
                                   encoding="utf-8")
    settings = server_settings(home, tmp_path_factory.mktemp("replies"))
    with KnowledgeBase.open("ev", settings=settings) as kb:
        assert not kb.ingest(docs).failed
        ids = {h.text: h.chunk_id for d in kb.documents() for h in kb.chunks(d.doc_id)}
    with running(settings) as url:
        yield url, known, ids, docs


@pytest.fixture
def http(served):
    import httpx

    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def _id(ids, text):
    return next(i for t, i in ids.items() if text in t)


def test_the_png_has_the_sentence_highlighted_where_it_stands(served, http, tmp_path):
    _, known, ids, _ = served
    r = http.get(f"/v1/kbs/ev/passages/{_id(ids, ZH)}/view", params={"sentence": ZH})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    png = tmp_path / "page.png"
    png.write_bytes(r.content)
    meta = http.get(f"/v1/kbs/ev/passages/{_id(ids, ZH)}/view", params={"sentence": ZH, "format": "json"}).json()
    xs, ys = yellow_pixels(png)
    box = [v * meta["scale"] for v in known[ZH]]
    assert iou((xs.min(), ys.min(), xs.max(), ys.max()), box) >= 0.8


def test_json_gives_the_boxes_in_points_and_pixels_and_the_page_size(served, http):
    _, known, ids, _ = served
    r = http.get(f"/v1/kbs/ev/passages/{_id(ids, EN)}/view", params={"format": "json", "sentence": EN})
    assert r.status_code == 200
    data = r.json()
    assert data["kind"] == "pdf" and data["page"] == 2 and "image" not in data
    assert data["page_size"][0] == pytest.approx(595.28, abs=0.5)
    assert data["image_size"] == [round(v * data["scale"]) for v in data["page_size"]]
    cited = [b for b in data["boxes"] if b["cited"]]
    assert iou(union([(b["x0"], b["y0"], b["x1"], b["y1"]) for b in cited]), known[EN]) >= 0.8
    for b in cited:
        assert b["pixels"] == [round(b[k] * data["scale"]) for k in ("x0", "y0", "x1", "y1")]


def test_the_route_needs_the_key(served):
    import httpx

    _, _, ids, _ = served
    r = httpx.get(f"{served[0]}/v1/kbs/ev/passages/{_id(ids, EN)}/view")
    assert r.status_code == 401


def test_unknown_and_traversal_looking_ids_are_refused(http):
    r = http.get("/v1/kbs/ev/passages/424242/view")
    assert r.status_code == 404 and "no passage 424242" in r.json()["error"]["message"]
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e", "1%2F..%2F..%2Fconfig.yaml", "-1", "1e3"):
        r = http.get(f"/v1/kbs/ev/passages/{bad}/view")
        assert r.status_code in (404, 422), bad
        assert "root:" not in r.text
    r = http.get("/v1/kbs/..%2F..%2Fetc/passages/1/view")
    assert r.status_code in (404, 422)


def test_a_format_without_pages_answers_json_and_refuses_a_png(served, http):
    _, _, ids, _ = served
    passage = _id(ids, "ferry")
    assert http.get(f"/v1/kbs/ev/passages/{passage}/view").status_code == 406
    data = http.get(f"/v1/kbs/ev/passages/{passage}/view",
                    params={"format": "json", "sentence": "Tickets are sold on board."}).json()
    start, end = data["mark"]
    assert data["kind"] == "text" and data["context"][start:end] == "Tickets are sold on board."


def test_an_edited_original_is_a_conflict_that_names_the_fix(served, http):
    _, _, ids, docs = served
    notes = docs / "notes.md"
    before = notes.read_bytes()
    notes.write_bytes(before.replace(b"seven", b"eight"))
    try:
        r = http.get(f"/v1/kbs/ev/passages/{_id(ids, 'ferry')}/view", params={"format": "json"})
        assert r.status_code == 409
        assert "changed after it was ingested" in r.json()["error"]["message"]
    finally:
        notes.write_bytes(before)
