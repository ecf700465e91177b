"""Store scale: write throughput and hybrid-search latency of each store at N chunks, embedding excluded.

    nice -n 10 python tests/bench/bench_store_scale.py [--sizes 100000,1000000] [--stores flat,hnsw,milvus]
        [--source-kb-home .bench/answers] [--source-kb devset] [--max-seconds 1800] [--search-seconds 300]
        [--queries 100] [--doc-chunks 20] [--batch-docs 25] [--tmp DIR] [--json [PATH]]

Stores, each filled from empty in a fresh temp folder, in a child process of its own (so that its peak RSS
is its own and a store that hangs can be stopped):
- local:  the local store as kb configures it by default: tantivy keywords, FAISS flat below
          retrieval.hnsw_threshold (200,000 chunks) and HNSW from there;
- flat:   the local store (SQLite + FTS5 + FAISS) with hnsw_threshold 2N: exact flat search;
- hnsw:   the local store with hnsw_threshold below N: FAISS HNSW;
- flat-tantivy, hnsw-tantivy: the same with store.keyword_engine tantivy instead of SQLite FTS5;
- milvus: the Milvus store on Milvus Lite (a fresh .db in the temp folder, served in process).

Data. Real chunks of an existing local KB (default: the dev-set KB of .bench/answers, English Python docs
and the Chinese Debian Reference, built by bench_answer.py / bench_retrieval.py): its documents are cut
into documents of at most --doc-chunks chunks and copied until N chunks are written; each copy's chunk
texts are varied (sentences rotated, then the words of the first sentence rotated, so that copies are not
identical) and its vectors are the real embeddings plus Gaussian noise (sigma 0.02), renormalised. Keyword
terms are kb.text.keywords.index_text of each chunk's embedding text, as the ingest computes them. Without a
source KB the texts are synthetic English and Chinese sentences on random topics (vectors: topic + noise).

Measured, per store:
- write: chunks/s of Store.put_documents over batches of --batch-docs documents; only the time inside
  put_documents counts (making the records, jieba included, does not: it is printed apart as "prep s");
- finish: Store.finish() (local: build and save the FAISS index; milvus: refit the centring, rewrite the
  vectors); total chunks/s = N / (write s + finish s);
- search: kb.retrieval.hybrid.search(mode=hybrid, k=5, default RetrievalSettings) p50/p95 over --queries queries, and
  dense-only and bm25-only p50. A query is a stored chunk's vector plus noise (sigma 0.03, about 0.86 cosine)
  returned by embed_query (no embedder runs) with a text of 6 consecutive terms of that chunk; hit@5 is the
  share of queries whose own chunk is among the 5 hybrid hits (a sanity check, not a quality figure: the
  chunk's copies compete with it), and per mode on the first queries every store ran;
- add 1000: then 1,000 more chunks (documents of --doc-chunks) are written and finished; add_1000_s is the time
  from the start of that write to the end of finish (searchable: a search for one of them finds it);
- recall@10 (local stores): the dense index's top 10 against exact search over every chunk's vector (streamed from
  SQLite, centred as the index is), for the dev-set questions embedded by the source KB's embedder (or, without a
  source KB, stored vectors plus noise sigma 0.05);
- peak RSS of the store's process up to the end of add 1000 (the records are made batch by batch, so this is
  mostly the store; the exact search for recall comes after), and the size on disk; wall s is the child's whole run (making records, writing, finishing, searching).
--max-seconds guards each store: once its put_documents time passes the limit, writing stops, the store is
reported as "did not finish in X s (wrote K chunks, K/s)", and finish + search run on what was written.
--search-seconds bounds each search mode's timing loop (the percentiles are then over fewer queries, and the
table says so). A child that runs past 2 x max + 3 x search + 900 s in all is killed (reported with the
phases it had finished).

Ratios: each store's hybrid p50 against the flat local store's hybrid p50 of the same run (same N).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
STORES = ("local", "flat", "hnsw", "flat-tantivy", "hnsw-tantivy", "milvus")
DIM = 384
VECTOR_NOISE = 0.02
QUERY_NOISE = 0.03
QUERY_TERMS = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="comma-separated chunk counts (default 100000)")
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}")
    parser.add_argument("--source-kb-home", type=Path, default=REPO / ".bench" / "answers",
                        help="a KB_HOME with a local KB whose chunks and vectors are copied")
    parser.add_argument("--source-kb", default="devset")
    parser.add_argument("--doc-chunks", type=int, default=20, help="chunks per written document (at most)")
    parser.add_argument("--batch-docs", type=int, default=25, help="documents per put_documents call")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=1800,
                        help="stop writing a store once its put_documents time passes this")
    parser.add_argument("--search-seconds", type=float, default=300,
                        help="stop timing a search mode after this many seconds (at least 5 queries run)")
    parser.add_argument("--tmp", type=Path, default=None, help="where the stores are written (default: system temp)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="the results as JSON: one object per store and size; a PATH gets a JSON list of them "
                        "(the table is still printed), no PATH prints JSON lines instead of the table")
    parser.add_argument("--recall-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown := set(stores) - set(STORES):
        raise SystemExit(f"unknown store(s) {sorted(unknown)}; choose among {', '.join(STORES)}")
    src = _source_db(args.source_kb_home, args.source_kb)
    print(f"source: {src if src else 'synthetic English + Chinese sentences (no source KB found)'}", file=sys.stderr)
    started = time.perf_counter()
    results = []
    queries_dir = tempfile.TemporaryDirectory(prefix="kb-scale-queries-")
    args.recall_file = _recall_queries(args, Path(queries_dir.name)) if src else None
    for n in sizes:
        for store in stores:
            result = _run_child(args, store, n)
            results.append(result)
            if args.json == "-":
                print(json.dumps(result), flush=True)
            elif args.json:  # written after each store, so that a long run that is stopped keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
        if args.json != "-":
            _print_table([r for r in results if r["n"] == n])
    print(f"\nwall time {time.perf_counter() - started:.0f} s; machine: {os.cpu_count()} cores",
          file=sys.stderr if args.json == "-" else sys.stdout)


# -- the parent: one child process per store and size ------------------------------------------------

def _run_child(args, store: str, n: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", store, "--n", str(n),
           "--source-kb-home", str(args.source_kb_home), "--source-kb", args.source_kb,
           "--doc-chunks", str(args.doc_chunks), "--batch-docs", str(args.batch_docs),
           "--queries", str(args.queries), "--max-seconds", str(args.max_seconds),
           "--search-seconds", str(args.search_seconds)]
    if args.tmp:
        cmd += ["--tmp", str(args.tmp)]
    if args.recall_file:
        cmd += ["--recall-file", str(args.recall_file)]
    limit = 2 * args.max_seconds + 3 * args.search_seconds + 900
    print(f"\n== {store}, {n} chunks", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        # stdout: one JSON line per finished phase; stderr (progress) goes straight to ours
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=limit)
        out, killed, rc = proc.stdout, False, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        killed, rc = True, None
    result: dict = {"store": store, "n": n}
    for line in out.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if killed:
        result["error"] = f"killed after {limit:.0f} s in all (phase done: {result.get('phase', 'none')})"
    elif rc != 0:
        result["error"] = result.get("error") or f"exit status {rc}"
    return result


def _print_table(rows: list[dict]) -> None:
    base = next((r.get("hybrid_p50_ms") for r in rows if r["store"] == "flat"), None)
    head = ["store", "N", "written", "write ch/s", "write s", "finish s", "total s", "total ch/s", "hybrid p50",
            "hybrid p95", "dense p50", "bm25 p50", "hit@5", "vs flat", "add 1000 s", "recall@10", "peak RSS MB", "disk MB", "prep s", "wall s"]
    table = [head]
    for r in rows:
        p50 = r.get("hybrid_p50_ms")
        table.append([
            r["store"], str(r["n"]), _fmt(r.get("written")), _fmt(r.get("write_chunks_s")), _fmt(r.get("write_s")),
            _fmt(r.get("finish_s")), _fmt(r.get("total_s")), _fmt(r.get("total_chunks_s")), _fmt(p50),
            _fmt(r.get("hybrid_p95_ms")), _fmt(r.get("dense_p50_ms")), _fmt(r.get("bm25_p50_ms")),
            _fmt(r.get("hit_at_5")), f"{p50 / base:.2f}x" if p50 and base else "-", _fmt(r.get("add_1000_s")),
            _fmt(r.get("recall_at_10")), _fmt(r.get("peak_rss_mb")),
            _fmt(r.get("disk_mb")), _fmt(r.get("prep_s")), _fmt(r.get("wall_s")),
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print()
    for i, row in enumerate(table):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print("(ms for latencies; write ch/s counts put_documents time only; total = write + finish; "
          "vs flat = hybrid p50 / the flat local store's hybrid p50 in this run)")
    for r in rows:
        if r.get("stopped"):
            print(f"{r['store']}: did not finish in {r['max_seconds']:.0f} s (wrote {r['written']} chunks, "
                  f"{r['write_chunks_s']} chunks/s); finish and search ran on those")
        short = [m for m in ("hybrid", "dense", "bm25") if r.get(f"{m}_queries", 0) < r.get("queries", 0)]
        if short:
            print(f"{r['store']}: search time budget reached: " + ", ".join(
                f"{m} over {r[f'{m}_queries']} of {r['queries']} queries" for m in short))
        if r.get("error"):
            print(f"{r['store']}: {r['error']}")
    _print_hits(rows)


def _print_hits(rows: list[dict]) -> None:
    """hit@5 of each mode over the first queries that every store ran (the stores get the same queries when they
    wrote the same chunks), so that a store that ran fewer queries is compared on the same ones."""
    modes = ("hybrid", "dense", "bm25")
    rows = [r for r in rows if all(f"{m}_hits" in r for m in modes)]
    if not rows or len({r["written"] for r in rows}) > 1:
        return
    firsts = {m: min(len(r[f"{m}_hits"]) for r in rows) for m in modes}
    print("\nhit@5 (own chunk in the top 5) on the same queries: " +
          ", ".join(f"{m} over the first {q}" for m, q in firsts.items()))
    for r in rows:
        print(f"  {r['store']:7s}" + "".join(
            f"  {m} {sum(r[f'{m}_hits'][:q]) / q if q else float('nan'):.2f}" for m, q in firsts.items()))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# -- the child: one store ------------------------------------------------------------------------------

def _child(args) -> None:
    n, kind = args.n, args.child
    source = _load_source(_source_db(args.source_kb_home, args.source_kb))
    with tempfile.TemporaryDirectory(prefix=f"kb-scale-{kind}-", dir=args.tmp) as tmp:
        store, writer, disk = _open_store(kind, Path(tmp), n, source["manifest"])
        try:
            _fill_and_search(args, store, writer, disk, source, n)
        except Exception as e:  # report what failed with whatever was measured before
            _emit({"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"})
            raise
        finally:
            writer.__exit__(None, None, None)
            store.close()
            if kind == "milvus":  # stop Milvus Lite's in-process server before its folder is removed
                from kb.stores import milvus

                if hasattr(milvus, "disconnect"):
                    milvus.disconnect(str(Path(tmp) / "milvus.db"))


def _open_store(kind: str, tmp: Path, n: int, manifest: dict):
    """(store, entered writer lock, () -> bytes on disk) for a new, empty KB 'scale'."""
    if kind == "milvus":
        from kb.stores.milvus import MilvusCatalog, connect

        uri = str(tmp / "milvus.db")
        catalog = MilvusCatalog(connect(uri), uri, "", 60.0)

        def disk() -> int:
            return sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file())
    else:
        from kb.config import RetrievalSettings, StoreSettings
        from kb.stores.local import LocalCatalog

        if kind == "local":  # kb's defaults
            catalog = LocalCatalog(tmp / "kbs", RetrievalSettings().hnsw_threshold, StoreSettings().keyword_engine)
        else:
            keywords = "tantivy" if kind.endswith("-tantivy") else "fts5"  # store.keyword_engine
            # flat: a threshold above N and the 1,000 chunks added later (past it the index would turn HNSW)
            catalog = LocalCatalog(tmp / "kbs", 2 * n if kind.startswith("flat") else 1, keywords)

        def disk() -> int:
            return sum(p.stat().st_size for p in (tmp / "kbs").rglob("*") if p.is_file())
    catalog.create("scale", manifest)
    store = catalog.open("scale", manifest)
    writer = catalog.writer("scale", 0)
    writer.__enter__()
    return store, writer, disk


def _fill_and_search(args, store, writer, disk, source: dict, n: int) -> None:
    from kb.config import RetrievalSettings
    from kb.eval import percentile
    from kb.retrieval.hybrid import search

    if source["prior"] is not None:
        store.set_language_prior(source["prior"])  # as the ingest does on a KB's first write
    rng, pick = np.random.default_rng(1), np.random.default_rng(2)
    sample: list[tuple[int, str, np.ndarray]] = []  # reservoir of written chunks: (chunk_id, text, vector)
    written = docs = 0
    put_s = prep_s = 0.0
    stopped = False
    last_report = time.perf_counter()
    batches = _batches(source, n, args.doc_chunks, args.batch_docs)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        prep_s += time.perf_counter() - t0
        if batch is None:
            break
        t0 = time.perf_counter()
        store.put_documents(batch)
        put_s += time.perf_counter() - t0
        for record in batch:
            for chunk, vector in zip(record.chunks, record.vectors):
                written += 1
                if len(sample) < args.queries:
                    sample.append((chunk.chunk_id, chunk.text, vector))
                elif (slot := int(pick.integers(written))) < args.queries:
                    sample[slot] = (chunk.chunk_id, chunk.text, vector)
        docs += len(batch)
        if time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            print(f"  {args.child}: {written}/{n} chunks, {written / put_s:.0f} chunks/s in put_documents "
                  f"({put_s:.0f} s), prep {prep_s:.0f} s, RSS {_rss_mb():.0f} MB", file=sys.stderr, flush=True)
        if put_s > args.max_seconds and written < n:
            stopped = True
            break
    _emit({"phase": "write", "written": written, "documents": docs, "write_s": round(put_s, 2),
           "write_chunks_s": round(written / put_s, 1) if put_s else None, "prep_s": round(prep_s, 1),
           "stopped": stopped, "max_seconds": args.max_seconds, "rss_after_write_mb": round(_rss_mb())})
    print(f"  {args.child}: wrote {written} chunks in {put_s:.1f} s; finishing", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    store.finish()
    finish_s = time.perf_counter() - t0
    total = put_s + finish_s
    _emit({"phase": "finish", "finish_s": round(finish_s, 2), "total_s": round(total, 2),
           "total_chunks_s": round(written / total, 1) if total else None, "disk_mb": round(disk() / 2**20)})
    print(f"  {args.child}: finish {finish_s:.1f} s; searching", file=sys.stderr, flush=True)

    settings = RetrievalSettings()
    queries = {}
    for chunk_id, text, vector in sample:
        query = _query_text(text, rng)
        v = vector + rng.normal(0, QUERY_NOISE, vector.shape)
        queries.setdefault(query, (chunk_id, (v / np.linalg.norm(v)).astype(np.float32)))

    def embed_query(text: str):
        return queries[text][1], 1.0

    for query in list(queries)[:5]:  # warm up: the dense index is loaded, Milvus collections are in memory
        search(store, embed_query, query, settings, 5, mode="hybrid")
    out: dict = {"phase": "search", "queries": len(queries)}
    for mode in ("hybrid", "dense", "bm25"):
        times: list[float] = []
        hits: list[int] = []
        for query, (chunk_id, _) in queries.items():
            if len(times) >= 5 and sum(times) / 1000 > args.search_seconds:
                break  # a slow store: the percentiles of the queries that ran
            t0 = time.perf_counter()
            found = search(store, embed_query, query, settings, 5, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
            hits.append(int(any(h.chunk_id == chunk_id for h in found)))
        out[f"{mode}_queries"] = len(times)
        out[f"{mode}_hits"] = hits
        if mode == "hybrid":
            out["hit_at_5"] = round(sum(hits) / len(hits), 2) if hits else None
        times.sort()
        out[f"{mode}_p50_ms"] = round(percentile(times, 50), 2)
        out[f"{mode}_p95_ms"] = round(percentile(times, 95), 2)
        print(f"  {args.child}: {mode} p50 {out[f'{mode}_p50_ms']} ms over {len(times)} queries", file=sys.stderr,
              flush=True)
    _emit(out)

    added = [r for batch in _batches(source, 1000, args.doc_chunks, args.batch_docs, prefix="added") for r in batch]
    t0 = time.perf_counter()
    store.put_documents(added)
    store.finish()
    add_s = time.perf_counter() - t0
    probe = added[-1]
    found = store.dense_query()(probe.vectors[0], 5, "en")
    out = {"phase": "add", "add_1000_s": round(add_s, 2), "added_found": any(
        i == probe.chunks[0].chunk_id for i, _ in found), "peak_rss_mb": _peak_rss_mb()}
    print(f"  {args.child}: added 1000 chunks in {add_s:.1f} s", file=sys.stderr, flush=True)
    _emit(out)
    if hasattr(store, "dense_index"):
        t0 = time.perf_counter()
        out = {"phase": "recall", **_recall(store, args.recall_file, sample)}
        print(f"  {args.child}: recall@10 {out['recall_at_10']} ({time.perf_counter() - t0:.0f} s); by efSearch "
              f"[recall, ms]: {out.get('recall_by_ef')}", file=sys.stderr, flush=True)
        _emit(out)


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _recall(store, recall_file: Path | None, sample) -> dict:
    """recall@10 of the store's dense index against exact search over every chunk vector, streamed from SQLite."""
    from kb.stores.local.schema import blob_vectors
    from kb.text.lang import language

    index = store.dense_index()
    if recall_file is not None:
        data = np.load(recall_file)
        queries, langs, kind = data["vectors"], [str(x) for x in data["langs"]], "dev-set questions"
    else:
        rng = np.random.default_rng(3)
        queries = np.stack([v + rng.normal(0, 0.05, v.shape) for _, _, v in sample]).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        langs, kind = [language(t) for _, t, _ in sample], "stored vectors + noise"
    centred = np.stack([index.centering.query(q, lang) for q, lang in zip(queries, langs)]).astype(np.float32)
    approx = [[i for i, _ in index.search(q, 10, None, lang)] for q, lang in zip(queries, langs)]
    best = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    cursor = store._db.execute("SELECT chunk_id, vector, text FROM chunks")
    while rows := cursor.fetchmany(50_000):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = blob_vectors([r[1] for r in rows], store.dim, store.db_path)
        vectors = index.centering.vectors(vectors, [language(r[2]) for r in rows])
        scores = np.concatenate([best, centred @ vectors.T], axis=1)
        every = np.concatenate([best_ids, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
        top = np.argsort(-scores, axis=1)[:, :10]
        best, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(every, top, 1)
    def recall(found) -> float:
        return round(float(np.mean([len(set(a) & set(e.tolist())) / 10 for a, e in zip(found, best_ids)])), 4)

    out = {"recall_at_10": recall(approx), "recall_queries": f"{len(queries)} {kind}",
           "index_kind": "hnsw" if index.hnsw else "flat"}
    if index.hnsw:  # the trade-off: recall and one query's time at each efSearch
        out["recall_by_ef"] = {}
        for ef in (512, 1024, 2048, 4096):
            t0 = time.perf_counter()
            found = [[i for i, _ in index.search(q, 10, None, lang, ef=ef)] for q, lang in zip(queries, langs)]
            out["recall_by_ef"][ef] = [recall(found), round((time.perf_counter() - t0) * 1000 / len(queries), 2)]
    return out


def _recall_queries(args, folder: Path) -> Path | None:
    """The dev-set questions embedded by the source KB's embedder (as a user's questions are), saved for the
    children; None when the embedder cannot be loaded."""
    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import load_questions
    from kb.text.lang import language

    try:
        questions = [q.question for q in load_questions(REPO / "tests" / "devset" / "qa.jsonl")]
        base = KnowledgeBase.open(args.source_kb, settings=Settings(home=args.source_kb_home))
        vectors = np.asarray(base.embedder().encode(questions, query=True), dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - the bench goes on with noisy stored vectors
        print(f"recall queries: the source KB's embedder did not load ({e}); using stored vectors + noise",
              file=sys.stderr)
        return None
    path = folder / "questions.npz"
    np.savez(path, vectors=vectors, langs=np.asarray([language(q) for q in questions]))
    return path


def _emit(data: dict) -> None:
    print(json.dumps(data), flush=True)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _query_text(text: str, rng) -> str:
    """QUERY_TERMS consecutive terms of a chunk, written as a person would (Chinese without spaces)."""
    from kb.text.keywords import terms
    from kb.text.lang import language

    words = terms(text) or ["query"]
    start = int(rng.integers(max(1, len(words) - QUERY_TERMS + 1)))
    window = words[start:start + QUERY_TERMS]
    return "".join(window) if language(text) == "zh" else " ".join(window)


# -- the data ------------------------------------------------------------------------------------------

def _source_db(home: Path, name: str) -> Path | None:
    path = home / "kbs" / name / "meta.sqlite"
    return path if path.is_file() else None


def _load_source(path: Path | None) -> dict:
    """Documents [(path, title, file_type, [(text, section, page), ...], vectors)], the manifest and the prior."""
    from kb.stores.local.schema import blob_vectors

    manifest = {"format": "kb-index", "version": 1,
                "embedder": {"model": "synthetic", "dim": DIM, "max_seq_length": 512, "query_prefix": "",
                             "passage_prefix": "", "backend": "synthetic", "normalized": True},
                "chunking": {"max_tokens": 200, "overlap_tokens": 32}, "created_at": time.time()}
    if path is None:
        return {"docs": _synthetic_docs(), "manifest": manifest, "prior": None}
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    docs = []
    for doc_id, doc_path, title, file_type in db.execute(
            "SELECT doc_id, path, title, file_type FROM documents ORDER BY path").fetchall():
        rows = db.execute("SELECT text, section, page, vector FROM chunks WHERE doc_id=? ORDER BY ordinal",
                          (doc_id,)).fetchall()
        if rows:
            dim = manifest["embedder"]["dim"]
            vectors = blob_vectors([r[3] for r in rows], dim, path)
            docs.append((doc_path, title, file_type, [(r[0], r[1], r[2]) for r in rows], vectors))
    row = db.execute("SELECT value FROM meta WHERE key='language_prior'").fetchone()
    db.close()
    prior = None
    if row:
        prior = {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(row[0]).items()}
    return {"docs": docs, "manifest": manifest, "prior": prior}


def _synthetic_docs(count: int = 160, chunks: int = 20) -> list:
    """English and Chinese documents on random topics, each chunk a few sentences; vectors: topic + noise."""
    rng = np.random.default_rng(7)
    en = ("system file network server memory process thread index query package install configure update kernel "
          "module driver user group permission backup archive compress encrypt certificate socket port service "
          "daemon log rotate schedule cron shell script variable function class method object string list "
          "dictionary iterator generator decorator context manager exception error warning debug test build "
          "release version branch merge commit").split()
    zh = ("系统 文件 网络 服务器 内存 进程 线程 索引 查询 软件包 安装 配置 更新 内核 模块 驱动 用户 权限 备份 归档 "
          "压缩 加密 证书 端口 服务 日志 计划 脚本 变量 函数 对象 字符串 列表 字典 异常 错误 警告 调试 测试 版本 "
          "分支 合并 提交 镜像 仓库 源码 编译").split()
    docs = []
    for d in range(count):
        chinese = d % 2 == 1
        vocab = zh if chinese else en
        topic = rng.normal(0, 1, DIM)
        topic /= np.linalg.norm(topic)
        focus = rng.choice(len(vocab), 8, replace=False)
        rows, vectors = [], []
        for c in range(chunks):
            sentences = []
            for _ in range(int(rng.integers(3, 7))):
                words = [vocab[i] if rng.random() < 0.6 else vocab[rng.integers(len(vocab))]
                         for i in rng.choice(focus, int(rng.integers(6, 14)))]
                sentences.append(("".join(words) + "。") if chinese else (" ".join(words).capitalize() + "."))
            rows.append(((" " if not chinese else "").join(sentences), f"Part {c // 5 + 1}", None))
            v = topic + rng.normal(0, 0.6 / np.sqrt(DIM), DIM) * 1.5
            vectors.append(v / np.linalg.norm(v))
        title = f"文档 {d}" if chinese else f"Document {d}"
        docs.append((f"/synthetic/{d:04d}.{'md' if chinese else 'txt'}", title, "md" if chinese else "txt", rows,
                     np.asarray(vectors, dtype=np.float32)))
    return docs


def _batches(source: dict, n: int, doc_chunks: int, batch_docs: int, prefix: str = "bench"):
    """Lists of Records, batch_docs documents each, until n chunks: the source documents cut into documents of
    at most doc_chunks chunks, copied with varied texts and noisy vectors."""
    from kb.ingest.parse import chunk_id_for, doc_id_for
    from kb.stores import Record
    from kb.text.keywords import index_text
    from kb.types import Chunk, DocumentInfo

    rng = np.random.default_rng(0 if prefix == "bench" else 1)  # the added documents' vectors differ from the first
    pieces = [(path, title, file_type, rows[i:i + doc_chunks], vectors[i:i + doc_chunks], i // doc_chunks)
              for path, title, file_type, rows, vectors in source["docs"] for i in range(0, len(rows), doc_chunks)]
    total, copy, batch = 0, 0, []
    now = time.time()
    while total < n:
        for path, title, file_type, rows, vectors, part in pieces:
            rows = rows[:n - total]
            new_path = f"/{prefix}/copy{copy:04d}{path}#part{part}"
            doc_id = doc_id_for(new_path)
            texts = [_vary(text, copy) for text, _, _ in rows]
            chunks, start = [], 0
            for ordinal, (text, (_, section, page)) in enumerate(zip(texts, rows)):
                chunks.append(Chunk(chunk_id_for(doc_id, ordinal, text), doc_id, ordinal, text, section, page,
                                    start, start + len(text)))
                start += len(text) + 2
            noisy = vectors[:len(rows)] + rng.normal(0, VECTOR_NOISE, (len(rows), vectors.shape[1]))
            noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
            doc_text = "\n\n".join(texts)
            digest = hashlib.blake2b(doc_text.encode(), digest_size=16).hexdigest()
            info = DocumentInfo(doc_id, new_path, title, digest, len(doc_text.encode()), now, len(chunks), now,
                                file_type)
            batch.append(Record(info, doc_text, chunks, noisy, [index_text(c.embedding_text(title)) for c in chunks]))
            total += len(chunks)
            if len(batch) == batch_docs or total >= n:
                yield batch
                batch = []
            if total >= n:
                return
        copy += 1


def _vary(text: str, n: int) -> str:
    """Copy n of a chunk: its sentences rotated by n (as bench_search.py's _rotate), then the words (or, in
    Chinese, the characters) of the first sentence rotated by what is left of n, so copies rarely repeat."""
    parts = [p for p in re.split(r"(?<=[。！？.!?])\s*", text) if p]
    if not parts or n == 0:
        return text
    if len(parts) >= 2:
        k = n % len(parts)
        parts, n = parts[k:] + parts[:k], n // len(parts)
    if n:
        words = parts[0].split()
        if len(words) >= 2:
            k = n % len(words)
            parts[0] = " ".join(words[k:] + words[:k])
        elif len(parts[0]) >= 2:
            k = n % len(parts[0])
            parts[0] = parts[0][k:] + parts[0][:k]
    return " ".join(parts)


if __name__ == "__main__":
    main()
