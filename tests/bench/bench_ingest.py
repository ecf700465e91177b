"""Ingest benchmark (P1, P2) on the Debian Reference, English + Chinese, HTML + PDF: the default (the ensemble
of multilingual-e5-small and all-MiniLM-L6-v2, both ONNX int8) against all-MiniLM-L6-v2 alone on torch float32
(the default before e5), each in a process of its own, in the same run.

    tests/bench/fetch_debian_reference.sh
    python tests/bench/bench_ingest.py [--corpus .corpus/debian-reference] [--json]

For each embedder: the whole-pipeline ingest time, the raw encode time of exactly the chunk texts the
pipeline embedded (same model, already loaded), the re-ingest time of the unchanged corpus, chunks/s,
and the process's peak RSS. Printed:
P1a = raw encode time / pipeline time, same models (goal >= 0.85);
P1b = MiniLM (torch fp32) ingest time / default ingest time, same corpus (goal >= 1.0), and the same
      ratio in chunks/s (the two tokenizers cut the corpus into different numbers of chunks);
P2  = re-ingest time / first ingest time (goal <= 1/50); peak RSS of the default (goal <= 2 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Each run's embedding settings: kb's default, and the default before multilingual-e5-small (MiniLM on torch).
RUNS = {"default": {}, "minilm-torch": {"model": "all-MiniLM-L6-v2", "backend": "torch"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "debian-reference")
    parser.add_argument("--models", type=Path, default=REPO / ".bench" / "models", help="where the default is built")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure this embedder only
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus} is missing: run tests/bench/fetch_debian_reference.sh first")
    if args.one:
        print(json.dumps(_measure(args.one, args.corpus, args.models)))
        return

    runs = {}
    for name in RUNS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--corpus", str(args.corpus),
                              "--models", str(args.models)], check=True, capture_output=True, text=True).stdout
        runs[name] = json.loads(out.strip().splitlines()[-1])
    new, old = runs["default"], runs["minilm-torch"]
    result = {
        "default": new, "minilm": old,
        "P1a_raw_encode_over_pipeline": round(new["raw_encode_s"] / new["first_ingest_s"], 3),
        "P1b_minilm_time_over_default_time": round(old["first_ingest_s"] / new["first_ingest_s"], 3),
        "P1b_chunks_per_s_ratio": round(new["pipeline_chunks_per_s"] / old["pipeline_chunks_per_s"], 3),
        "P2_reingest_over_first": new["P2_reingest_over_first"],
        "peak_rss_mb_default": new["peak_rss_mb"],
    }
    if args.json:
        print(json.dumps(result))
        return
    keys = list(new)
    print(f"{'':32s}{'default (e5 + MiniLM, int8)':>28s}{'all-MiniLM-L6-v2 (torch)':>26s}")
    for key in keys:
        print(f"{key:32s}{new[key]!s:>28s}{old.get(key, '')!s:>26s}")
    print(f"\nP1a = {result['P1a_raw_encode_over_pipeline']:.3f} (goal >= 0.85);  "
          f"P1b = {result['P1b_minilm_time_over_default_time']:.3f} by time, "
          f"{result['P1b_chunks_per_s_ratio']:.3f} by chunks/s (goal >= 1.0);  "
          f"P2 = 1/{1 / max(result['P2_reingest_over_first'], 1e-9):.0f} (goal <= 1/50);  "
          f"peak RSS {result['peak_rss_mb_default']:.0f} MB (goal <= 2048)")


def _measure(run: str, corpus: Path, models: Path) -> dict:
    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.handle import configured_ensemble
    from kb.ingest.embed import get_embedder

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), embedding={**RUNS[run], "cache_dir": str(models)})
        embedder = get_embedder(settings.embedding, settings.models_dir)  # loaded once, outside the timings
        others = configured_ensemble(settings)
        for e in [embedder, *others]:
            e.encode(["warm up"])
        model = " + ".join(settings.embedding.models)
        base = KnowledgeBase.open("bench", settings=settings)
        t0 = time.perf_counter()
        first = base.ingest(corpus)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = base.ingest(corpus)
        again_s = time.perf_counter() - t0
        texts = _embedding_texts(Path(base.stats()["path"]) / "meta.sqlite")
        t0 = time.perf_counter()
        embedder.encode(texts)
        for other in others:  # the texts each other embedder read at ingest
            other.encode([t for t in texts if other.reads(t)])
        encode_s = time.perf_counter() - t0
        input_mb = sum(p.stat().st_size for p in corpus.iterdir() if p.is_file()) / 1e6
        n = first.chunks_added
        result = {
            "embedder": f"{model} ({embedder.backend})", "files": len(first.files), "failed": len(first.failed),
            "chunks": n, "input_mb": round(input_mb, 2), "first_ingest_s": round(first_s, 2),
            "raw_encode_s": round(encode_s, 2), "reingest_s": round(again_s, 4),
            "reingest_unchanged": again.count("unchanged"), "pipeline_chunks_per_s": round(n / first_s, 1),
            "raw_encode_chunks_per_s": round(n / encode_s, 1), "input_mb_per_s": round(input_mb / first_s, 3),
            "P2_reingest_over_first": round(again_s / first_s, 5),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "index_mb_on_disk": round(base.stats()["bytes_on_disk"] / 1e6, 2),
        }
        base.close()
    return result


def _embedding_texts(db_path: Path) -> list[str]:
    """The exact strings the pipeline embedded: each chunk under its heading path (or document title)."""
    from kb.types import Chunk

    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT c.text, c.section, d.title FROM chunks c JOIN documents d USING (doc_id)").fetchall()
    db.close()
    return [Chunk(0, "", 0, text, section, None, 0, 0).embedding_text(title) for text, section, title in rows]


if __name__ == "__main__":
    main()
