"""The ensemble's side vectors in both stores (the local one and Milvus Lite): another embedder's vectors, for only
the chunks it reads, are searched by `dense_query(model=...)`, never return a chunk the model skipped, go with their
document when it is replaced or removed, come back from `export()` and survive `kb migrate` local -> Milvus ->
local. Vectors are small and synthetic (no embedder): each test knows which chunk a vector belongs to."""

from __future__ import annotations

import numpy as np
import pytest

from kb.config import Settings
from kb.errors import IndexFormatError, StorageError
from kb.stores import Record, SideVectors, catalog
from kb.text.keywords import index_text
from kb.types import Chunk, DocumentInfo

pytest.importorskip("pymilvus")

MAIN, READER, SPARSE = "main-model", "sentence-transformers/all-MiniLM-L6-v2", "sparse-reader"
DIMS = {MAIN: 8, READER: 6, SPARSE: 5}
MANIFEST = {"format": "kb-index", "version": 1, "embedder": {"model": MAIN, "dim": DIMS[MAIN]},
            "chunking": {"max_tokens": 200, "overlap_tokens": 0}, "created_at": 0.0,
            "ensemble": [{"model": READER, "dim": DIMS[READER]}, {"model": SPARSE, "dim": DIMS[SPARSE]}]}
DOCS, ENGLISH, CHINESE = 6, 6, 2  # chunks per document: READER embeds the English ones (36 in all: centred)


@pytest.fixture(params=["local", "milvus"])
def place(request, settings, tmp_path):
    """Settings of one store (for Milvus a Milvus Lite file of this test's own, freed afterwards)."""
    if request.param == "local":
        yield settings
        return
    uri = str(tmp_path / "kb.db")
    yield Settings(home=settings.home, store={"backend": "milvus", "uri": uri})
    from kb.stores.milvus import disconnect

    disconnect(uri)


def _unit(rng, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _record(d: int, rng, version: int = 0, reader_rows=None, sparse_rows=None) -> Record:
    """Document d: ENGLISH English chunks then CHINESE Chinese ones. READER embeds the English chunks (or
    `reader_rows`); SPARSE every other chunk of even documents (or `sparse_rows`), nothing of odd ones."""
    doc_id = f"doc{d}"
    texts = [f"Note {j} of report {d} version {version} describes the harbour crane number {j}."
             for j in range(ENGLISH)]
    texts += [f"第{d}号报告第{j}段说明仓库的消防规定。" for j in range(CHINESE)]
    chunks, at = [], 0
    for j, text in enumerate(texts):
        chunks.append(Chunk(d * 1000 + version * 100 + j + 1, doc_id, j, text, "", None, at, at + len(text)))
        at += len(text) + 1
    reader = tuple(range(ENGLISH)) if reader_rows is None else tuple(reader_rows)
    sparse = tuple(range(0, len(chunks), 2) if d % 2 == 0 else ()) if sparse_rows is None else tuple(sparse_rows)
    info = DocumentInfo(doc_id, f"/docs/{doc_id}.md", f"Report {d}", f"hash{d}-{version}", 100, 1.0, len(chunks), 2.0,
                        "md")
    return Record(info, "\n".join(texts), chunks, _unit(rng, len(chunks), DIMS[MAIN]), [index_text(t) for t in texts],
                  {READER: SideVectors(reader, _unit(rng, len(reader), DIMS[READER])),
                   SPARSE: SideVectors(sparse, _unit(rng, len(sparse), DIMS[SPARSE]))})


def _side(records: list[Record], model: str) -> dict[int, np.ndarray]:
    """chunk id -> the model's vector, over the records."""
    return {r.chunks[i].chunk_id: v for r in records for i, v in zip(r.ensemble[model].rows, r.ensemble[model].vectors)}


def _written(settings, name: str, records: list[Record]):
    """A new KB with an ensemble, holding `records`, finished; returns (catalog, store)."""
    cat = catalog(settings)
    cat.create(name, MANIFEST)
    store = cat.open(name, cat.manifest(name))
    with cat.writer(name, 0):
        store.put_documents(records)
        store.finish()
    return cat, store


def _found(store, model: str, vector: np.ndarray, limit: int = 200, doc_ids=None) -> list[int]:
    return [cid for cid, _ in store.dense_query(doc_ids, model)(vector, limit, "en")]


def _stored_side_rows(store, model: str) -> int:
    """Every side row a store holds for a model, committed or not (orphans would show here)."""
    if hasattr(store, "sides"):  # Milvus
        return store.client.query(store.sides[model], filter="", output_fields=["count(*)"])[0]["count(*)"]
    return store._db.execute("SELECT COUNT(*) FROM ensemble_vectors WHERE model=?", (model,)).fetchone()[0]


def test_side_vectors_are_searched_and_skipped_chunks_never_found(place):
    rng = np.random.default_rng(1)
    records = [_record(d, rng) for d in range(DOCS)]
    _, store = _written(place, "e", records)
    for model in (READER, SPARSE):
        side = _side(records, model)
        for cid, vector in side.items():
            assert _found(store, model, vector, 1) == [cid], model
        everything = _found(store, model, next(iter(side.values())))
        assert sorted(everything) == sorted(side)  # every embedded chunk, and none the model skipped
    assert len(_side(records, READER)) == DOCS * ENGLISH and store.finished()
    one = records[3]
    within = _found(store, READER, one.ensemble[READER].vectors[0], doc_ids=[one.info.doc_id])
    assert sorted(within) == sorted(one.chunks[i].chunk_id for i in one.ensemble[READER].rows)
    main = store.dense_query()(records[2].vectors[7], 1, "zh")
    assert [cid for cid, _ in main] == [records[2].chunks[7].chunk_id]  # the main index is untouched
    with pytest.raises(StorageError, match="no vectors of embedding model 'unknown'"):
        store.dense_query(None, "unknown")


def test_replacing_and_removing_a_document_takes_its_side_vectors(place):
    rng = np.random.default_rng(2)
    records = [_record(d, rng) for d in range(DOCS)]
    cat, store = _written(place, "r", records)
    # document 0 again: the same chunks, READER now reads only two of them, SPARSE none
    again = _record(0, rng, reader_rows=[0, 1], sparse_rows=[])
    removed = records[1]
    with cat.writer("r", 0):
        store.put_documents([again])
        store.remove_documents([removed.info.doc_id])
        store.touch_document(records[2].info.path, 9.0)  # a new mtime keeps the document's side vectors
        store.finish()
    now = [again] + records[2:]
    for model in (READER, SPARSE):
        side = _side(now, model)
        assert sorted(_found(store, model, _unit(rng, 1, DIMS[model])[0])) == sorted(side), model
        for cid, vector in side.items():
            assert _found(store, model, vector, 1) == [cid]
        assert _stored_side_rows(store, model) == len(side)  # old versions and removed documents left nothing
    skipped = {c.chunk_id for c in again.chunks[2:]}
    assert not skipped & set(_found(store, READER, records[0].ensemble[READER].vectors[4]))


def test_export_gives_the_side_vectors_back(place):
    rng = np.random.default_rng(3)
    records = [_record(d, rng) for d in range(DOCS)]
    _, store = _written(place, "x", records)
    _same_side_vectors(list(store.export()), records)


def _same_side_vectors(exported: list[Record], records: list[Record]) -> None:
    """Each exported document holds each model's vectors of the same chunks as written (raw, as given, to float16's
    precision: the local store keeps float16)."""
    by_id = {r.info.doc_id: r for r in records}
    assert sorted(r.info.doc_id for r in exported) == sorted(by_id)
    for got in exported:
        want = by_id[got.info.doc_id]
        assert [c.chunk_id for c in got.chunks] == [c.chunk_id for c in want.chunks]
        assert set(got.ensemble) == {READER, SPARSE}
        for model, side in want.ensemble.items():
            assert got.ensemble[model].rows == side.rows, (got.info.doc_id, model)
            assert np.allclose(got.ensemble[model].vectors.reshape(len(side.rows), DIMS[model]), side.vectors,
                               atol=1e-3)


def test_migrate_local_to_milvus_and_back_keeps_side_vectors(settings, tmp_path):
    from kb.stores.migrate import migrate, target_settings
    from kb.stores.milvus import disconnect

    rng = np.random.default_rng(4)
    records = [_record(d, rng) for d in range(DOCS)]
    _, local = _written(settings, "mig", records)
    queries = {model: _unit(rng, 5, DIMS[model]) for model in (READER, SPARSE)}

    def rankings(store):
        return {m: [_found(store, m, q, 10) for q in qs] for m, qs in queries.items()}

    before = rankings(local)
    uri = str(tmp_path / "m.db")
    to_milvus = target_settings(settings, uri)
    assert migrate("mig", settings, to_milvus).checks["dense_top1_same"] == 1.0
    remote_place = catalog(to_milvus)
    remote = remote_place.open("mig", remote_place.manifest("mig"))
    assert remote_place.manifest("mig")["ensemble"] == MANIFEST["ensemble"]
    _same_side_vectors(list(remote.export()), records)
    assert rankings(remote) == before and remote.finished()
    migrate("mig", to_milvus, settings, replace=True)
    back_place = catalog(settings)
    back = back_place.open("mig", back_place.manifest("mig"))
    _same_side_vectors(list(back.export()), records)
    assert rankings(back) == before
    disconnect(uri)


def test_milvus_writer_killed_before_its_commit_leaves_no_side_rows(settings, tmp_path, monkeypatch):
    """A writer that dies between writing a version's rows and its document row's commit: readers keep the old
    version's side vectors, and the next writer deletes the dead version's side rows."""
    from kb.stores.milvus import disconnect

    uri = str(tmp_path / "k.db")
    there = Settings(home=settings.home, store={"backend": "milvus", "uri": uri})
    rng = np.random.default_rng(5)
    records = [_record(d, rng) for d in range(3)]
    cat, store = _written(there, "k", records)
    newer = _record(0, rng, version=1)  # other chunk ids
    upsert = store.client.upsert

    def killed(collection, rows, *args, **kwargs):
        if collection == store.docs:
            raise RuntimeError("killed")
        return upsert(collection, rows, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(store.client, "upsert", killed)
        with pytest.raises(StorageError):
            store.put_documents([newer])
    assert _stored_side_rows(store, READER) == len(_side(records, READER)) + ENGLISH  # the dead version's rows
    dead = set(_side([newer], READER))
    assert not dead & set(_found(store, READER, newer.ensemble[READER].vectors[0]))
    assert _found(store, READER, records[0].ensemble[READER].vectors[0], 1) == [records[0].chunks[0].chunk_id]

    writer = cat.open("k", cat.manifest("k"))  # the next writer
    other = _record(5, rng)
    with cat.writer("k", 0):
        writer.put_documents([other])
        writer.finish()
    for model in (READER, SPARSE):
        assert _stored_side_rows(writer, model) == len(_side(records + [other], model)), model
    disconnect(uri)


def test_a_kb_of_one_embedder_has_no_side_vectors(place):
    rng = np.random.default_rng(6)
    plain = {k: v for k, v in MANIFEST.items() if k != "ensemble"}
    cat = catalog(place)
    cat.create("one", plain)
    store = cat.open("one", cat.manifest("one"))
    record = _record(0, rng)
    with cat.writer("one", 0):
        store.put_documents([Record(record.info, record.text, record.chunks, record.vectors, record.terms)])
        store.finish()
    assert [r.ensemble for r in store.export()] == [{}]
    with pytest.raises(StorageError):
        store.dense_query(None, READER)


def test_milvus_build_without_the_manifests_side_collections_is_refused(settings, tmp_path):
    from kb.stores.milvus import disconnect

    uri = str(tmp_path / "f.db")
    cat = catalog(Settings(home=settings.home, store={"backend": "milvus", "uri": uri}))
    cat.create("old", {k: v for k, v in MANIFEST.items() if k != "ensemble"})
    with pytest.raises(IndexFormatError, match="holds no vectors of embedding model.*--rebuild"):
        cat.open("old", MANIFEST)
    disconnect(uri)
