"""Filters, neighbour expansion, de-duplication, MMR, the HNSW switch and the rerank plumbing."""

from __future__ import annotations

import pytest

from kb import KnowledgeBase
from kb.config import Settings


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "docs"
    (f / "2023").mkdir(parents=True)
    (f / "2024").mkdir()
    (f / "2023" / "ferry.md").write_text("# Ferry\n\nThe ferry to the island leaves every hour from pier four.\n")
    (f / "2024" / "ferry.txt").write_text("The ferry timetable changed: departures are now every half hour.\n")
    (f / "2024" / "copy.txt").write_text("The ferry timetable changed: departures are now every half hour.\n")
    long = "# Guide\n\n## Steps\n\n" + "\n\n".join(
        f"Step {i}: turn the valve number {i} a quarter turn clockwise and wait." for i in range(1, 13))
    (f / "guide.md").write_text(long)
    return f


def _open(settings, **retrieval):
    return KnowledgeBase.open("opts", settings=Settings(home=settings.home, retrieval=retrieval,
                                                        chunking={"max_tokens": 40, "overlap_tokens": 0}))


def test_filters_by_glob_folder_type_and_id(settings, folder):
    base = _open(settings)
    base.ingest(folder)
    md = base.search("ferry departures", k=5, file_types=["md"])
    assert md[0].path.endswith("ferry.md") and all(h.path.endswith(".md") for h in md)
    in_2024 = base.search("ferry departures", k=5, paths=[str(folder / "2024")])
    assert in_2024 and all("/2024/" in h.path for h in in_2024)
    assert all(h.path.endswith(".txt") for h in base.search("ferry", k=5, paths=["*.txt"]))
    doc = next(d for d in base.documents() if d.path.endswith("guide.md"))
    assert {h.doc_id for h in base.search("ferry", k=5, doc_ids=[doc.doc_id])} <= {doc.doc_id}
    assert base.search("ferry", k=5, paths=["/nowhere/*"]) == []


def test_identical_passages_are_shown_once(settings, folder):
    base = _open(settings)
    base.ingest(folder)
    texts = [h.text for h in base.search("ferry timetable half hour", k=5)]
    assert texts.count("The ferry timetable changed: departures are now every half hour.") == 1


def test_neighbours_merge_adjacent_chunks_of_the_section(settings, folder):
    plain = _open(settings)
    plain.ingest(folder)
    hit = plain.search("valve number 6", k=1, mode="bm25")[0]
    plain.close()
    wide = _open(settings, neighbors=1)
    merged = wide.search("valve number 6", k=1, mode="bm25")[0]
    assert merged.chunk_id == hit.chunk_id
    assert hit.text in merged.text and len(merged.text) > len(hit.text)
    assert merged.char_start < hit.char_start or merged.char_end > hit.char_end
    assert "Step 5" in merged.text or "Step 7" in merged.text


def test_mmr_prefers_diverse_hits(settings, folder):
    base = _open(settings, mmr=True, mmr_lambda=0.3)
    base.ingest(folder)
    hits = base.search("ferry departures every hour", k=2, mode="dense")
    assert len({h.path for h in hits}) == 2


def test_large_index_switches_to_hnsw(settings, folder):
    import faiss

    base = _open(settings, hnsw_threshold=5)
    base.ingest(folder)
    index = faiss.downcast_index(base._store.dense_index().faiss.index)
    assert isinstance(index, faiss.IndexHNSW)  # float16 storage (IndexHNSWSQ)
    assert base.search("valve number 3", k=1, mode="dense")[0].path.endswith("guide.md")


def _tiny_cross_encoder(path):
    """A random-weight BERT cross-encoder with a WordPiece vocabulary of the test's words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = "the ferry to island leaves every hour from pier four timetable changed departures are now half " \
            "step turn valve number a quarter clockwise and wait guide : . 1 2 3 4 5 6 7 8 9 0".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words))
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, num_labels=1)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def test_rerank_orders_by_the_cross_encoder(settings, folder, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = _tiny_cross_encoder(tmp_path / "ce")
    base = _open(settings, reranker=str(model_dir), rerank_candidates=10)
    base.ingest(folder)
    query = "ferry departures"
    hits = base.search(query, k=4)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        enc = tok([query] * len(hits), [h.text for h in hits], return_tensors="pt", padding=True, truncation=True)
        expected = torch.sigmoid(model(**enc).logits[:, 0]).tolist()
    assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    plain = base.search(query, k=4, rerank=False)
    assert all(h.ranks for h in plain)
