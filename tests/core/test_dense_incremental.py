"""The local store's dense index follows the KB in place (kb/stores/local/index.py): added chunks are added,
removed ones deleted (flat) or tombstoned (HNSW), and the index is rebuilt only when its kind changes, the
tombstones pass their share or the centring drifts, each rebuild recorded. Searches always equal exact search over
what the KB holds now, in this process and in a fresh one reading the saved file."""

from __future__ import annotations

import time

import numpy as np

from kb.stores import dense
from kb.stores.base import Record
from kb.stores.centring import fit
from kb.stores.local import LocalCatalog
from kb.stores.local.index import CENTRING_DRIFT
from kb.types import Chunk, DocumentInfo

DIM = 16
MANIFEST = {"format": "kb-index", "version": 1,
            "embedder": {"model": "synthetic", "dim": DIM, "max_seq_length": 512, "query_prefix": "",
                         "passage_prefix": "", "backend": "synthetic", "normalized": True},
            "chunking": {"max_tokens": 200, "overlap_tokens": 32}, "created_at": 0.0}


def _record(n: int, doc: int, rng, chunks: int = 10, shift: np.ndarray | None = None, zh: bool = False) -> Record:
    doc_id = f"d{doc:05d}"
    vectors = rng.normal(size=(chunks, DIM)).astype(np.float32) + (0 if shift is None else shift)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    text = "规定第{}条，员工出差时住宿标准为每晚六百元。" if zh else "Chunk {} of a document about reactors and bridges."
    rows = [Chunk(n + i + 1, doc_id, i, text.format(n + i), "", None, 0, 10) for i in range(chunks)]
    info = DocumentInfo(doc_id, f"/docs/{doc_id}.md", doc_id, f"h{doc}", 1, 0.0, chunks, time.time(), "md")
    return Record(info, " ".join(c.text for c in rows), rows, vectors, [c.text.lower() for c in rows])


class KB:
    """A local store with its writer lock, and the chunk vectors it should hold (for exact answers)."""

    def __init__(self, root, threshold: int, seed: int = 0) -> None:
        self.catalog = LocalCatalog(root, threshold, "fts5")
        self.catalog.create("t", MANIFEST)
        self.store = self.catalog.open("t", MANIFEST)
        self.rng = np.random.default_rng(seed)
        self.held: dict[str, Record] = {}
        self.next = 0

    def put(self, docs: int, **kw) -> None:
        records = []
        for _ in range(docs):
            record = _record(self.next * 100, self.next, self.rng, **kw)
            self.next += 1
            records.append(record)
            self.held[record.info.doc_id] = record
        with self.catalog.writer("t", 0):
            self.store.put_documents(records)
            self.store.finish()

    def remove(self, doc_ids: list[str]) -> None:
        with self.catalog.writer("t", 0):
            self.store.remove_documents(doc_ids)
            self.store.finish()
        for d in doc_ids:
            del self.held[d]

    def exact(self, query: np.ndarray, k: int, lang: str = "en") -> list[int]:
        """The top k by exact search over the held chunks, centred as the store's index is."""
        ids = np.asarray([c.chunk_id for r in self.held.values() for c in r.chunks])
        vectors = np.concatenate([r.vectors for r in self.held.values()]).astype(np.float16).astype(np.float32)
        langs = ["zh" if "规定" in c.text else "en" for r in self.held.values() for c in r.chunks]
        centering = self.store.centering()
        scores = centering.vectors(vectors, langs) @ centering.query(query, lang)
        return [int(i) for i in ids[np.argsort(-scores)[:k]]]

    def search(self, query: np.ndarray, k: int, store=None) -> list[int]:
        return [i for i, _ in (store or self.store).dense_index().search(query, k)]


def _query(rng) -> np.ndarray:
    q = rng.normal(size=DIM).astype(np.float32)
    return q / np.linalg.norm(q)


def test_flat_index_is_updated_in_place_and_equals_exact_search(tmp_path):
    kb = KB(tmp_path / "kbs", threshold=10_000)
    kb.put(40)
    first = kb.store.dense_index()
    kb.put(3)
    kb.remove(["d00001", "d00007"])
    index = kb.store.dense_index()
    assert index is first, "updated, not rebuilt"
    assert index.ntotal == kb.store.chunk_count() == 410
    assert [r["reason"] for r in kb.store.dense_rebuilds()] == ["no saved index"]
    rng = np.random.default_rng(5)
    for _ in range(10):
        q = _query(rng)
        assert kb.search(q, 10) == kb.exact(q, 10)
    fresh = kb.catalog.open("t", MANIFEST)  # another process: reads the saved file, no rebuild
    assert fresh.dense_index().ntotal == 410 and fresh._sources[""].rebuilt == []
    q = _query(rng)
    assert kb.search(q, 10, fresh) == kb.exact(q, 10)


def test_hnsw_tombstones_removed_chunks_and_rebuilds_past_their_share(tmp_path):
    kb = KB(tmp_path / "kbs", threshold=100)
    kb.put(50)  # 500 chunks, HNSW
    index = kb.store.dense_index()
    assert index.hnsw
    kb.remove([f"d{i:05d}" for i in range(5)])  # 50 of 500: tombstoned
    assert kb.store.dense_index() is index and len(index.tombstones) == 50 and index.live == 450
    rng = np.random.default_rng(6)
    removed = {c.chunk_id for i in range(5) for c in _record(i * 100, i, np.random.default_rng(0)).chunks}
    for _ in range(20):
        found = kb.search(_query(rng), 10)
        assert len(found) == 10 and not removed & set(found)
    # the saved file holds the tombstoned nodes; a fresh reader finds them again from SQLite
    fresh = kb.catalog.open("t", MANIFEST)
    assert len(fresh.dense_index().tombstones) == 50
    kb.remove([f"d{i:05d}" for i in range(5, 15)])  # 150 of 500: past 20%, rebuilt without them
    rebuilt = kb.store.dense_index()
    assert rebuilt is not index and rebuilt.ntotal == 350 and not rebuilt.tombstones
    assert "removed chunks still in the graph" in kb.store.dense_rebuilds()[-1]["reason"]


def test_index_kind_changes_past_the_threshold(tmp_path):
    kb = KB(tmp_path / "kbs", threshold=300)
    kb.put(25)
    assert not kb.store.dense_index().hnsw
    kb.put(10)  # 350 > 300
    assert kb.store.dense_index().hnsw
    assert "past retrieval.hnsw_threshold" in kb.store.dense_rebuilds()[-1]["reason"]
    kb.remove(["d00000"])  # 340: still HNSW (it turns flat under 80% of the threshold)
    assert kb.store.dense_index().hnsw
    kb.remove([f"d{i:05d}" for i in range(1, 12)])  # 230 < 240
    assert not kb.store.dense_index().hnsw


def test_centring_is_refitted_when_a_language_mean_drifts(tmp_path):
    kb = KB(tmp_path / "kbs", threshold=10_000)
    kb.put(20)
    kb.put(20, zh=True)
    index = kb.store.dense_index()
    kb.put(1)  # a small addition: the means barely move
    assert kb.store.dense_index() is index
    shift = np.zeros(DIM, dtype=np.float32)
    shift[0] = 3.0
    kb.put(20, shift=shift)  # English chunks of another kind: the English mean moves far
    refitted = kb.store.dense_index()
    assert refitted is not index
    reason = kb.store.dense_rebuilds()[-1]["reason"]
    assert "centring refitted" in reason and float(reason.split("moved ")[1].split()[0]) > CENTRING_DRIFT
    # the sums kept by every transaction equal the means of the chunks themselves
    vectors = np.concatenate([r.vectors for r in kb.held.values()])
    langs = ["zh" if "规定" in c.text else "en" for r in kb.held.values() for c in r.chunks]
    expected = fit(vectors, langs, kb.store.language_prior())
    for lang, mean in expected.means.items():
        assert np.allclose(refitted.centering.means[lang], mean, atol=1e-5)
    rng = np.random.default_rng(8)
    q = _query(rng)
    assert kb.search(q, 10) == kb.exact(q, 10)


def test_a_kb_from_before_language_sums_catches_up(tmp_path, monkeypatch):
    from kb.stores.local import index as local_index

    monkeypatch.setattr(local_index, "BATCH", 40)  # progress is told for KBs of more than BATCH chunks
    kb = KB(tmp_path / "kbs", threshold=10_000)
    kb.put(10)
    db = kb.store._db
    db.execute("DELETE FROM meta WHERE key='language_sums_kept'")  # as a KB built before them
    db.execute("DELETE FROM language_sums")
    assert kb.store.language_sums() is None
    kb.store.close()
    kb.store = kb.catalog.open("t", MANIFEST)  # the next process that writes
    told = []
    with kb.catalog.writer("t", 0):
        kb.store.catch_up(lambda what, done, total: told.append((what, done, total)))  # as an ingest starts
    assert [t for t in told if t[0] == "vectors"] == [("vectors", n, 100) for n in (0, 40, 80, 100)]
    kb.put(2)  # the sums are kept from now on
    sums, counts = kb.store.language_sums()
    assert counts["en"] == 120
    expected = np.concatenate([r.vectors for r in kb.held.values()]).sum(axis=0)
    assert np.allclose(sums["en"], expected, atol=0.01)  # summed from the stored float16 vectors


def test_filtered_hnsw_search_is_exact_among_the_allowed_chunks(tmp_path):
    kb = KB(tmp_path / "kbs", threshold=100)
    kb.put(50)
    allowed = ["d00003", "d00010"]
    query = kb.store.dense_query(allowed)
    rng = np.random.default_rng(9)
    q = _query(rng)
    found = [i for i, _ in query(q, 5, "en")]
    keep = {d: kb.held[d] for d in allowed}
    everything, kb.held = kb.held, keep
    try:
        assert found == kb.exact(q, 5)
    finally:
        kb.held = everything


def test_saved_file_is_streamed_with_its_digest(tmp_path):
    from kb.stores.centring import Centering

    index = dense.DenseIndex(dense.new_index(DIM, hnsw=True), Centering())
    index.add(np.arange(1, 101), np.eye(DIM, dtype=np.float32)[np.arange(100) % DIM])
    path = tmp_path / "v.faiss"
    digest = dense.write_index(index.faiss, path)
    assert dense.file_digest(path) == digest
    back = dense.read_index(path, digest)
    assert back.ntotal == 100 and dense.is_hnsw(back)
    assert dense.read_index(path, "0" * 32) is None  # other bytes than kb recorded: never handed to FAISS
    assert dense.read_index(tmp_path / "gone.faiss", digest) is None


def test_a_large_index_is_saved_once_enough_changed(tmp_path, monkeypatch):
    """Rewriting a large index file costs more than adding a few chunks: finish leaves the saved file behind on
    purpose, and readers add the few changes on open, until SAVE_AFTER chunks changed."""
    from kb.stores.local import index as local_index
    from kb.stores.local import saved_index_state

    monkeypatch.setattr(local_index, "SAVE_ALWAYS_BELOW", 100)
    monkeypatch.setattr(local_index, "SAVE_AFTER", 50)
    kb = KB(tmp_path / "kbs", threshold=10_000)
    kb.put(30)
    first = sorted((tmp_path / "kbs" / "t").glob("vectors-*.faiss"))
    kb.put(2)  # 20 chunks changed: the file stays
    assert sorted((tmp_path / "kbs" / "t").glob("vectors-*.faiss")) == first
    assert saved_index_state(kb.store._db, tmp_path / "kbs" / "t")[0] == "behind" and kb.store.finished()
    fresh = kb.catalog.open("t", MANIFEST)
    rng = np.random.default_rng(11)
    q = _query(rng)
    assert fresh.dense_index().ntotal == 320 and kb.search(q, 10, fresh) == kb.exact(q, 10)
    kb.put(4)  # 60 changed since the file: saved
    assert sorted((tmp_path / "kbs" / "t").glob("vectors-*.faiss")) != first
    assert saved_index_state(kb.store._db, tmp_path / "kbs" / "t")[0] == "saved"
    assert kb.store._sources[""].changed_since_save == 0


def test_an_ensemble_members_index_is_updated_and_saved_too(tmp_path):
    """The other embedder of an ensemble (ensemble_vectors) has its own index file, kept the same way: a fresh
    reader loads it instead of reading every vector again, and a removal takes its vectors out."""
    from kb.stores.base import SideVectors

    manifest = {**MANIFEST, "ensemble": [{"model": "other", "dim": 8}]}
    catalog = LocalCatalog(tmp_path / "kbs", 10_000, "fts5")
    catalog.create("e", manifest)
    store = catalog.open("e", manifest)
    rng = np.random.default_rng(12)
    side_vectors: dict[int, np.ndarray] = {}

    def records(first: int, count: int) -> list[Record]:
        out = []
        for doc in range(first, first + count):
            record = _record(doc * 100, doc, rng)
            side = rng.normal(size=(6, 8)).astype(np.float32)
            side /= np.linalg.norm(side, axis=1, keepdims=True)
            out.append(Record(record.info, record.text, record.chunks, record.vectors, record.terms,
                              {"other": SideVectors(tuple(range(6)), side)}))  # it reads 6 chunks of 10
            side_vectors.update({record.chunks[i].chunk_id: side[i] for i in range(6)})
        return out

    with catalog.writer("e", 0):
        store.put_documents(records(0, 200))  # large enough that 12 more vectors barely move its means
        store.finish()
    assert len(list((tmp_path / "kbs" / "e").glob("ensemble-*.faiss"))) == 1
    first = store.ensemble_index("other")
    with catalog.writer("e", 0):
        store.put_documents(records(200, 2))
        store.remove_documents(["d00000"])
        store.finish()
    index = store.ensemble_index("other")
    assert index is first and index.ntotal == 1206
    fresh = catalog.open("e", manifest)
    again = fresh.ensemble_index("other")
    assert again.ntotal == 1206 and fresh._sources["other"].rebuilt == []
    for chunk_id in list(side_vectors)[-3:]:  # each new vector finds its own chunk first
        assert again.search(side_vectors[chunk_id], 1, lang="en")[0][0] == chunk_id
    removed = [c for c in list(side_vectors)[:6]]
    assert not set(removed) & {i for i, _ in again.search(side_vectors[removed[0]], 20)}
    sums, counts = fresh.language_sums("other")
    assert counts["en"] == 1206
