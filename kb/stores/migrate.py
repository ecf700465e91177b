"""`kb migrate`: copy a knowledge base to another store (local <-> Milvus) without re-embedding.

The copy is written as a replacement in the target (a hidden folder, or a new Milvus build) that becomes the
KB only after it is verified: the same documents and chunks, and a sample of searches that find the same
passages. The source is read, never changed; a failed or interrupted migration leaves the target as it was.
Both sides hold their writer lock, so no ingest changes either while it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kb.config import Settings, StoreSettings
from kb.errors import KBError, KBNotFoundError
from kb.stores import Record, Store, catalog
from kb.text.lang import language

BATCH_CHUNKS = 2000  # chunks per put_documents call
SAMPLE = 40  # chunks whose vector and words are searched in both stores
AGREE = 0.9  # share of sampled dense searches whose top hit must be the same in both


@dataclass
class MigrationReport:
    name: str
    source: str
    target: str
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0
    checks: dict[str, float] = field(default_factory=dict)

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def target_settings(settings: Settings, to: str, token: str | None = None, db_name: str | None = None) -> Settings:
    """The settings of `--to`: 'local' is $KB_HOME/kbs, anything else a Milvus URI (a .db file or a server)."""
    if to == "local":
        store = StoreSettings(backend="local", keyword_engine=settings.store.keyword_engine)
    else:
        store = settings.store.model_copy(update={
            "backend": "milvus", "uri": to,
            "token": settings.store.token if token is None else token,
            "db_name": settings.store.db_name if db_name is None else db_name})
    return settings.model_copy(update={"store": store})


def migrate(name: str, source: Settings, target: Settings, *, replace: bool = False,
            progress: Callable[[int, int], None] | None = None) -> MigrationReport:
    """Copy KB `name` from the store of `source` to the store of `target`; returns counts, speed and checks.
    `progress(chunks_done, chunks_total)` is called after each batch."""
    started = time.perf_counter()
    src, dst = catalog(source), catalog(target)
    if src.where == dst.where:
        raise KBError(f"KB '{name}' is already in {src.where}: give --to another place ('local' or a Milvus URI)")
    if not src.exists(name):
        raise KBNotFoundError(f"no knowledge base named '{name}' in {src.where} (existing: "
                              f"{', '.join(src.names()) or 'none'})")
    if dst.exists(name) and not replace:
        raise KBError(f"{dst.where} already holds a KB named '{name}'; pass --replace to overwrite it with the copy")
    manifest = src.manifest(name)
    report = MigrationReport(name, src.where, dst.where)
    with src.writer(name, 0), dst.writer(name, 0):
        reader = src.open(name, manifest)
        fresh = dst.replacement(name, manifest)
        try:
            total = reader.chunk_count()
            prior = reader.language_prior()
            if prior is not None:
                fresh.store.set_language_prior(prior)
            fresh.store.preset_centering(reader.centering())
            batch: list[Record] = []
            for record in reader.export():
                batch.append(record)
                if sum(len(r.chunks) for r in batch) >= BATCH_CHUNKS:
                    _write(fresh.store, batch, report, total, progress)
                    batch = []
            _write(fresh.store, batch, report, total, progress)
            fresh.store.finish()
            report.checks = verify(reader, fresh.store)
        except BaseException:
            fresh.abort()
            reader.close()
            raise
        fresh.commit()
        reader.close()
    report.seconds = time.perf_counter() - started
    return report


def _write(store: Store, batch: list[Record], report: MigrationReport, total: int, progress) -> None:
    if not batch:
        return
    store.put_documents(batch)
    report.documents += len(batch)
    report.chunks += sum(len(r.chunks) for r in batch)
    if progress:
        progress(report.chunks, total)


def verify(source: Store, copy: Store, sample: int = SAMPLE) -> dict[str, float]:
    """Raise KBError unless the copy holds the same documents and chunks and a sample of searches agrees:
    each sampled chunk's own vector searched densely (top hit and top-5 overlap) and its words searched by
    keyword (the chunk itself found in the top 10). Returns the figures."""
    docs_a = {d.doc_id: d.content_hash for d in source.documents()}
    docs_b = {d.doc_id: d.content_hash for d in copy.documents()}
    if docs_a != docs_b or source.chunk_count() != copy.chunk_count():
        raise KBError(f"the copy in {copy.where} does not match {source.where}: {len(docs_b)} documents / "
                      f"{copy.chunk_count()} chunks against {len(docs_a)} / {source.chunk_count()}; nothing was "
                      "changed, run `kb migrate` again")
    ids = [int(i) for i in source.chunk_ids_of(sorted(docs_a))]
    if not ids:
        return {"documents": 0, "chunks": 0}
    picked = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, min(sample, len(ids)))]
    rows = source.chunks_by_id(picked)
    vectors_a, vectors_b = source.vectors_of(picked), copy.vectors_of(picked)
    dense_a, dense_b = source.dense_query(), copy.dense_query()
    top1 = overlap = words = vector_error = 0.0
    for cid in picked:
        lang = language(rows[cid]["text"])
        vector_error = max(vector_error, float(np.abs(vectors_a[cid] - vectors_b[cid]).max()))
        a = [c for c, _ in dense_a(vectors_a[cid], 5, lang)]
        b = [c for c, _ in dense_b(vectors_a[cid], 5, lang)]
        top1 += a[:1] == b[:1]
        overlap += len(set(a) & set(b)) / max(1, len(a))
        query = " ".join(rows[cid]["text"].split()[:12])[:120]
        words += cid in [c for c, _ in copy.keyword_search(query, 10)]
    n = len(picked)
    checks = {"documents": len(docs_a), "chunks": source.chunk_count(), "sampled": n,
              "dense_top1_same": top1 / n, "dense_top5_overlap": overlap / n, "keyword_finds_itself": words / n,
              "max_vector_difference": vector_error}
    if checks["dense_top1_same"] < AGREE or vector_error > 1e-3:
        raise KBError(f"the copy in {copy.where} searches differently from {source.where} (dense top hit the same "
                      f"for {checks['dense_top1_same']:.0%} of {n} sampled chunks, vectors differ by up to "
                      f"{vector_error:.2g}); nothing was changed")
    return checks
