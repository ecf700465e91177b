"""The Milvus store against the local store on the public dev set: retrieval quality and `kb migrate` speed.

    tests/devset/fetch_corpus.sh            # the Debian Reference (en + zh) and the other dev-set documents
    python tests/bench/bench_store_quality.py [--home .bench/kbhome] [--json]

The dev-set KB (multilingual-e5-small, built in --home on first use) is copied with `kb migrate`'s code into
a fresh Milvus Lite file, timed (chunks/s), then copied back into a second local KB. The same 136 questions
are searched in each: hit@5 per group (en, zh, zh→en, en→zh) for hybrid, dense and bm25, and the difference
Milvus - local (the goal: within 0.02). Same embedder, same vectors; what can differ is the keyword ranking
(Milvus's BM25 over kb's jieba terms against SQLite FTS5's bm25 with Porter stemming) and the centring
(the Milvus store rewrites vectors only when a language mean moves by more than RECENTRE_AT).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("all", "en", "zh", "zh-en", "en-zh")
MODES = ("hybrid", "dense", "bm25")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import load_questions, run_retrieval, summarize
    from kb.stores.migrate import migrate, target_settings

    local = Settings(home=args.home)
    source = KnowledgeBase.open("devset", settings=local)
    if not source.documents():
        if not args.corpus.is_dir():
            raise SystemExit(f"{args.corpus} is missing: run tests/devset/fetch_corpus.sh first")
        source.ingest(args.corpus)
    work = Path(tempfile.mkdtemp(prefix="kb-store-bench-"))
    try:
        milvus = target_settings(local.model_copy(update={"home": work}), str(work / "m.db"))
        there = migrate("devset", local, milvus)
        back_home = local.model_copy(update={"home": work / "back"})
        back = migrate("devset", milvus, back_home)
        questions = load_questions(args.questions)
        stores = {"local": source, "milvus": KnowledgeBase.open("devset", settings=milvus, create=False),
                  "local, copied back": KnowledgeBase.open("devset", settings=back_home, create=False)}
        table: dict[str, dict[str, dict[str, float]]] = {}
        latency: dict[str, dict[str, float]] = {}
        for name, base in stores.items():
            for mode in MODES:
                run_retrieval(base, questions[:5], mode, 10)  # warm the embedder and caches
                started = time.perf_counter()
                result = summarize(run_retrieval(base, questions, mode, 10))
                latency.setdefault(name, {})[mode] = result["overall"]["p50_ms"]
                table.setdefault(name, {})[mode] = {
                    g: (result["overall"] if g == "all" else result["groups"].get(g, {})).get("hit@5", 0.0)
                    for g in GROUPS}
                table[name][mode]["seconds"] = time.perf_counter() - started
    finally:
        from kb.stores.milvus import disconnect

        disconnect(str(work / "m.db"))
        shutil.rmtree(work, ignore_errors=True)

    copies = {"local -> milvus": there, "milvus -> local": back}
    if args.json:
        print(json.dumps({"hit@5": table, "p50_ms": latency,
                          "migrate": {k: {"chunks": r.chunks, "seconds": r.seconds, "chunks_per_s": r.chunks_per_second,
                                          "checks": r.checks} for k, r in copies.items()}}))
        return
    for label, r in copies.items():
        print(f"kb migrate {label}: {r.documents} documents, {r.chunks} chunks in {r.seconds:.1f} s = "
              f"{r.chunks_per_second:.0f} chunks/s; checks {json.dumps({k: round(v, 3) for k, v in r.checks.items()})}")
    print(f"\n{'hit@5':28s}" + "".join(f"{g:>8s}" for g in GROUPS) + f"{'p50 ms':>9s}")
    for name in stores:
        for mode in MODES:
            row = table[name][mode]
            print(f"{name + ' ' + mode:28s}" + "".join(f"{row[g]:8.3f}" for g in GROUPS) + f"{latency[name][mode]:9.1f}")
    print()
    for mode in MODES:
        diff = [table["milvus"][mode][g] - table["local"][mode][g] for g in GROUPS]
        ratio = latency["milvus"][mode] / max(latency["local"][mode], 1e-9)
        print(f"{'milvus - local ' + mode:28s}" + "".join(f"{d:+8.3f}" for d in diff)
              + f"  (largest {max(map(abs, diff)):.3f}; p50 x{ratio:.2f})")


if __name__ == "__main__":
    main()
