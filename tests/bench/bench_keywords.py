"""Keyword engines at scale: SQLite FTS5 (as the local store queries it) against tantivy and bm25s.

    nice -n 10 python tests/bench/bench_keywords.py [--sizes 100000,1000000] [--engines fts5,tantivy,bm25s]
        [--queries 200] [--source-kb-home .bench/kbhome] [--source-kb devset] [--tmp DIR]

Data. The chunks of bench_store_scale.py's source (a local KB's chunks, else its synthetic English and Chinese
documents), their terms computed once with kb.text.keywords.index_text of each chunk's embedding text, as the
ingest does. Copy k of a chunk (documents of 20 chunks) has the same terms rotated by k with about 10% of them
dropped at random, so that copies differ in length and frequencies (bench_store_scale's copies only reorder
words, which leaves BM25 ties). Making the terms runs jieba on the source chunks only.

A query: 2 to 6 consecutive terms of a random source chunk, as text, turned into terms by
kb.text.keywords.query_terms (question words out); each engine is given those terms, OR-ed, top 10 by BM25.
- fts5: a file with the store's chunks_fts (same tokenizer) and a chunks(chunk_id, doc_id) table, queried with
  the store's SQL (kb.stores.local.keywords.fts5_search);
- tantivy: one text field of the terms (tantivy's `simple` tokenizer, which splits at punctuation as FTS5's
  unicode61 does, then ascii folding and the English stemmer, as FTS5's porter), doc_id as a raw indexed
  field, chunk_id a fast field; a disjunction of term queries (block-max WAND); the filter is a term-set query
  on doc_id that the disjunction must meet;
- bm25s: its sparse matrix over the same stemmed tokens, the filter as its weight_mask.
Each engine runs in a child process of its own (its peak RSS is its own). Measured: index s (add + commit /
build), bm25 p50/p95 over the queries, filtered p50 (the first 50 queries limited to 100 random documents),
peak RSS MB and RSS after indexing, disk MB (FTS5's includes the terms' text and the chunks table), and top-10
overlap with FTS5's ranking: the share of FTS5's top 10 in the engine's top 10, by chunk and by the source
chunk the hits are copies of. The table gives each engine's p50 against
FTS5's in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("fts5", "tantivy", "bm25s")
DOC_CHUNKS = 20
FILTER_DOCS = 100
FILTER_QUERIES = 50  # FTS5 takes seconds a filtered query at 1M


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--source-kb-home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--source-kb", default="devset")
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    started = time.perf_counter()
    for n in [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]:
        rows = []
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            cmd = [sys.executable, __file__, "--child", engine, "--n", str(n), "--queries", str(args.queries),
                   "--source-kb-home", str(args.source_kb_home), "--source-kb", args.source_kb]
            if args.tmp:
                cmd += ["--tmp", str(args.tmp)]
            print(f"== {engine}, {n} chunks", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            row = {"engine": engine, "n": n}
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    row.update(json.loads(line))
            if proc.returncode:
                row["error"] = f"exit status {proc.returncode}"
            rows.append(row)
        _print_table(rows)
    print(f"\nwall time {time.perf_counter() - started:.0f} s; machine: {os.cpu_count()} cores")


def _print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["engine"] == "fts5" and "p50_ms" in r), None)
    print("\n| engine | N | index s | bm25 p50 / p95 ms | p50 vs fts5 | filtered p50 ms | peak RSS MB | "
          "RSS after index MB | disk MB | top-10 overlap with fts5: chunks / source chunks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "p50_ms" not in r:
            print(f"| {r['engine']} | {r['n']:,} | {r.get('error', 'no result')} |")
            continue
        ratio = f"{r['p50_ms'] / base['p50_ms']:.3f}x" if base else "-"
        overlap = "-" if r["engine"] == "fts5" or not base else (
            f"{_overlap(base['top'], r['top']):.3f} / {_overlap(base['top'], r['top'], r['sources']):.3f}")
        print(f"| {r['engine']} | {r['n']:,} | {r['index_s']:.1f} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {ratio} | "
              f"{r['filtered_p50_ms']:.2f} | {r['peak_rss_mb']:,.0f} | {r['rss_after_index_mb']:,.0f} | "
              f"{r['disk_mb']:,.0f} | {overlap} |")


def _overlap(base: list, other: list, sources: int = 0) -> float:
    """Mean share of FTS5's top 10 found in the other engine's top 10 (queries FTS5 finds nothing for left out);
    with `sources`, of the source chunks they are copies of (copies differ by a few dropped terms, so which
    copies make the top 10 turns on near-ties: tantivy stores document lengths in one byte, FTS5 exactly)."""
    def key(i: int) -> int:
        return (i - 1) % sources if sources else i

    shares = [len({key(i) for i in ids} & {key(i) for i in other_ids}) / len({key(i) for i in ids})
              for (ids, _), (other_ids, _) in zip(base, other) if ids]
    return float(np.mean(shares)) if shares else 0.0


# -- the child: one engine, one size -----------------------------------------------------------------

def _child(args) -> None:
    from kb.text.keywords import query_terms

    base_terms, docs = _base_terms(args)
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(args.queries):
        words = base_terms[int(rng.integers(len(base_terms)))].split() or ["query"]
        size = int(rng.integers(2, 7))
        start = int(rng.integers(max(1, len(words) - size + 1)))
        queries.append(query_terms(" ".join(words[start:start + size])))
    n_docs = -(-args.n // DOC_CHUNKS)
    filter_ids = [f"d{int(i)}" for i in rng.choice(n_docs, min(FILTER_DOCS, n_docs), replace=False)]
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-kw-{args.child}-", dir=args.tmp))
    try:
        engine = {"fts5": Fts5, "tantivy": Tantivy, "bm25s": Bm25s}[args.child](tmp)
        started = time.perf_counter()
        engine.index(_chunks(base_terms, args.n))
        index_s = time.perf_counter() - started
        rss_after = _rss_mb("VmRSS")
        times, tops = [], []
        for q in queries:
            t = time.perf_counter()
            hits = engine.search(q, 10, None)
            times.append(time.perf_counter() - t)
            tops.append(([h[0] for h in hits], [h[1] for h in hits]))
        filtered = []
        for q in queries[:FILTER_QUERIES]:
            t = time.perf_counter()
            engine.search(q, 10, filter_ids)
            filtered.append(time.perf_counter() - t)
        print(json.dumps({"index_s": index_s, "p50_ms": 1000 * float(np.percentile(times, 50)),
                          "p95_ms": 1000 * float(np.percentile(times, 95)),
                          "filtered_p50_ms": 1000 * float(np.percentile(filtered, 50)),
                          "peak_rss_mb": _rss_mb("VmHWM"), "rss_after_index_mb": rss_after,
                          "disk_mb": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 2**20,
                          "top": tops, "docs": docs, "sources": len(base_terms)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _base_terms(args) -> tuple[list[str], int]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_store_scale import _load_source, _source_db

    from kb.text.keywords import index_text
    from kb.types import Chunk

    source = _load_source(_source_db(args.source_kb_home, args.source_kb))
    out = []
    for _path, title, _type, rows, _vectors in source["docs"]:
        for text, section, page in rows:
            out.append(index_text(Chunk(0, "", 0, text, section, page, 0, 0).embedding_text(title)))
    return out, len(source["docs"])


def _chunks(base_terms: list[str], n: int):
    """(chunk_id, doc_id, terms) for n chunks: copy k of the source chunks, rotated by k, ~10% of terms dropped."""
    rng = np.random.default_rng(0)
    split = [t.split() for t in base_terms]
    for i in range(n):
        k, j = divmod(i, len(split))
        words = split[j]
        if k and words:
            r = k % len(words)
            words = words[r:] + words[:r]
            keep = rng.random(len(words)) >= 0.1
            words = [w for w, kept in zip(words, keep) if kept]
        yield i + 1, f"d{i // DOC_CHUNKS}", " ".join(words)


def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Fts5:
    def __init__(self, tmp: Path) -> None:
        self.db = sqlite3.connect(tmp / "fts.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE chunks (chunk_id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL)")
        self.db.execute("CREATE INDEX chunks_by_doc ON chunks(doc_id)")
        self.db.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(terms, "
                        "tokenize='porter unicode61 remove_diacritics 2')")

    def index(self, chunks) -> None:
        batch: list = []
        for row in chunks:
            batch.append(row)
            if len(batch) == 10_000:
                self._write(batch)
                batch = []
        self._write(batch)

    def _write(self, batch: list) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO chunks VALUES (?, ?)", [(c, d) for c, d, _ in batch])
        self.db.executemany("INSERT INTO chunks_fts(rowid, terms) VALUES (?, ?)", [(c, t) for c, _, t in batch])
        self.db.execute("COMMIT")

    def search(self, terms: list[str], limit: int, doc_ids):
        from kb.stores.local.keywords import fts5_search

        return fts5_search(self.db, " ".join(terms), limit, doc_ids)


class Tantivy:
    def __init__(self, tmp: Path) -> None:
        import tantivy

        self.tantivy = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("terms", tokenizer_name="kb_terms", index_option="freq")
        builder.add_text_field("doc_id", tokenizer_name="raw", index_option="basic")
        builder.add_integer_field("chunk_id", fast=True, indexed=False)
        self.schema = builder.build()
        (tmp / "tantivy").mkdir()
        self.index_ = tantivy.Index(self.schema, path=str(tmp / "tantivy"))
        self.analyzer = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
                         .filter(tantivy.Filter.ascii_fold()).filter(tantivy.Filter.stemmer("english")).build())
        self.index_.register_tokenizer("kb_terms", self.analyzer)

    def index(self, chunks) -> None:
        writer = self.index_.writer(heap_size=256_000_000, num_threads=2)
        Document = self.tantivy.Document
        for chunk_id, doc_id, terms in chunks:
            writer.add_document(Document(chunk_id=chunk_id, doc_id=doc_id, terms=terms))
        writer.commit()
        writer.wait_merging_threads()
        self.index_.reload()
        self.searcher = self.index_.searcher()

    def search(self, terms: list[str], limit: int, doc_ids):
        tv = self.tantivy
        tokens = dict.fromkeys(tok for t in terms for tok in self.analyzer.analyze(t))
        if not tokens:
            return []
        query = tv.Query.boolean_query([(tv.Occur.Should, tv.Query.term_query(self.schema, "terms", tok))
                                        for tok in tokens])
        if doc_ids is not None:
            query = tv.Query.boolean_query([(tv.Occur.Must, query), (tv.Occur.Must, tv.Query.const_score_query(
                tv.Query.term_set_query(self.schema, "doc_id", doc_ids), 0.0))])
        hits = self.searcher.search(query, limit, count=False).hits
        ids = self.searcher.fast_field_values("chunk_id", [a for _, a in hits])
        return [(i, s) for i, (s, _) in zip(ids, hits)]


class Bm25s:
    def __init__(self, tmp: Path) -> None:
        import tantivy

        self.tmp = tmp
        self.analyzer = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
                         .filter(tantivy.Filter.ascii_fold()).filter(tantivy.Filter.stemmer("english")).build())

    def index(self, chunks) -> None:
        import bm25s

        corpus, ids, docs = [], [], []
        for chunk_id, doc_id, terms in chunks:
            corpus.append(self.analyzer.analyze(terms))
            ids.append(chunk_id)
            docs.append(int(doc_id[1:]))
        self.ids, self.docs = np.asarray(ids), np.asarray(docs)
        self.retriever = bm25s.BM25()
        self.retriever.index(corpus, show_progress=False)
        del corpus
        self.retriever.save(str(self.tmp / "bm25s"))

    def search(self, terms: list[str], limit: int, doc_ids):
        tokens = [tok for t in terms for tok in self.analyzer.analyze(t)]
        tokens = [t for t in dict.fromkeys(tokens) if t in self.retriever.vocab_dict]
        if not tokens:
            return []
        mask = None
        if doc_ids is not None:
            mask = np.isin(self.docs, [int(d[1:]) for d in doc_ids]).astype(np.float32)
        found, scores = self.retriever.retrieve([tokens], k=limit, show_progress=False, weight_mask=mask,
                                                n_threads=1)
        return [(int(self.ids[i]), float(s)) for i, s in zip(found[0], scores[0]) if s > 0]


if __name__ == "__main__":
    main()
