"""Every supported format ingests, and a paraphrased query finds the right file (and page)."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase

# (file name, query, expected page or None). The query paraphrases the file's unique sentence; the files
# are built by tests/conftest.py.
FORMAT_CASES = [
    ("report.pdf", "warehouse forklift inventory audit", 1),
    ("report.pdf", "差旅住宿每晚标准", 2),
    ("report.pdf", "how many penguins were counted in the census", 3),
    ("notes.docx", "descaling the aquarium pump", None),
    ("slides.pptx", "volcano sensors tremor reports", 2),
    ("budget.xlsx", "telescope lens cost", None),
    ("page.html", "lighthouse keeper ledger of ships", None),
    ("guide.md", "calming bees with smoke before opening the hive", None),
    ("plain.txt", "glacier retreat measured with stakes", None),
    ("gbk.txt", "长城烽火台", None),
    ("gb18030.txt", "敦煌壁画修复", None),
    ("big5.txt", "阿里山茶園", None),
    ("utf16.txt", "梯田灌溉", None),
    ("bom.txt", "黄河渡口", None),
    ("table.csv", "Saturn ring particle size", None),
    ("record.json", "project codename Bluefin budget", None),
    ("mail.eml", "kayak rental for the team outing", None),
    ("book.epub", "origami crane folding steps", None),
    ("manual.rst", "calibrating the seismograph drum", None),
    ("letter.odt", "orchard pruning in late winter", None),
]


@pytest.fixture(scope="module")
def ingested(docs_folder, tmp_path_factory):
    from kb.config import Settings

    home = tmp_path_factory.mktemp("formats-home")
    base = KnowledgeBase.open("formats", settings=Settings(home=home))
    report = base.ingest(docs_folder)
    yield base, report
    base.close()


def test_every_file_is_ingested(ingested, docs_folder):
    base, report = ingested
    assert [f.path for f in report.failed] == []
    names = {p.name for p in docs_folder.iterdir()}
    assert {d.path.rsplit("/", 1)[-1] for d in base.documents()} == names
    assert all(d.chunks > 0 for d in base.documents())


@pytest.mark.parametrize("name,query,page", FORMAT_CASES, ids=[f"{c[0]}:{c[1][:12]}" for c in FORMAT_CASES])
def test_query_finds_the_right_file_and_page(ingested, name, query, page):
    base, _ = ingested
    hits = base.search(query, k=3)
    assert hits, f"no hit for {query!r}"
    top = hits[0]
    assert top.path.endswith("/" + name), f"{query!r} -> {[h.location for h in hits]}"
    if page is not None:
        assert top.page == page
    assert 0 < top.score <= 1


def test_text_decoded_from_legacy_encodings(ingested):
    base, _ = ingested
    texts = {h.path.rsplit("/", 1)[-1]: h.text for q in ("长城烽火台", "阿里山茶園", "梯田灌溉")
             for h in base.search(q, k=1, mode="bm25")}
    assert "烽火台用来传递军情" in texts["gbk.txt"]
    assert "茶園在清晨常常被雲霧籠罩" in texts["big5.txt"]
    assert "梯田依靠山泉灌溉" in texts["utf16.txt"]


def test_table_rows_keep_their_header(ingested):
    base, _ = ingested
    hit = base.search("Saturn ring particles", k=1, mode="bm25")[0]
    assert hit.text.splitlines()[0] == "planet | feature | detail"
    assert "Saturn | rings" in hit.text


def test_sections_and_titles_are_recorded(ingested):
    base, _ = ingested
    hit = base.search("smoke calms the bees", k=1)[0]
    assert hit.section == "Beekeeping > Opening the hive"
    docs = {d.path.rsplit("/", 1)[-1]: d for d in base.documents()}
    assert docs["guide.md"].title == "Beekeeping"
    assert docs["report.pdf"].file_type == "pdf"


def test_heading_permalinks_are_not_part_of_sections(tmp_path):
    from kb.ingest.loaders import load

    page = tmp_path / "sphinx.html"
    page.write_text('<h1>6. Modules<a class="headerlink" href="#m">¶</a></h1><p>Modules hold definitions.</p>')
    assert load(page)[0].text == "6. Modules"
