"""Retrieval quality on the public dev set, against the LangChain tutorial pipeline in the same run.

    tests/devset/fetch_corpus.sh
    python tests/bench/bench_retrieval.py [--home .bench/kbhome] [--json]

kb: the `devset` KB (ingested here if missing) searched in dense, bm25 and hybrid mode.
Baseline: the same parsed text split by RecursiveCharacterTextSplitter(500, 50), embedded by the same
model, flat FAISS inner-product top-k. Metric: hit@5 per language group (see kb/eval.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus} is missing: run tests/devset/fetch_corpus.sh first")

    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import load_questions, run_retrieval, summarize

    questions = load_questions(args.questions)
    settings = Settings(home=args.home)
    base = KnowledgeBase.open("devset", settings=settings)
    if not base.documents():
        base.ingest(args.corpus)
    results = {mode: summarize(run_retrieval(base, questions, mode, 10)) for mode in ("dense", "bm25", "hybrid")}
    results["langchain-tutorial"] = _baseline(args.corpus, questions, base.embedder())
    table = {mode: {g: m["hit@5"] for g, m in [("all", r["overall"]), *r["groups"].items()]}
             for mode, r in results.items()}
    diff = {g: round(100 * (table["hybrid"][g] - table["langchain-tutorial"][g]), 1) for g in table["hybrid"]}
    if args.json:
        print(json.dumps({"hit@5": table, "hybrid_minus_baseline_points": diff, "details": results}))
        return
    groups = list(table["hybrid"])
    print(f"{'hit@5':20s}" + "".join(f"{g:>8s}" for g in groups))
    for mode, row in table.items():
        print(f"{mode:20s}" + "".join(f"{row.get(g, 0):8.3f}" for g in groups))
    print(f"{'hybrid - baseline':20s}" + "".join(f"{diff[g]:+8.1f}" for g in groups) + "  (points)")


def _baseline(corpus: Path, questions, embedder) -> dict:
    """RecursiveCharacterTextSplitter 500/50 + the same embedder + flat top-k, as in LangChain's RAG tutorial."""
    import faiss
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from kb.eval import Outcome, first_hit_rank, summarize
    from kb.ingest.loaders import load

    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50)
    chunks: list[str] = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        text = "\n\n".join(e.text for e in load(path) if e.text.strip())
        chunks.extend(splitter.split_text(text))
    vectors = embedder.encode(chunks)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    outcomes = []
    for q in questions:
        if not q.evidence:
            continue
        start = time.perf_counter()
        _, ids = index.search(embedder._model.encode([q.question], normalize_embeddings=True).astype(np.float32), 10)
        seconds = time.perf_counter() - start
        outcomes.append(Outcome(q, first_hit_rank([chunks[i] for i in ids[0] if i >= 0], q.evidence), seconds))
    return summarize(outcomes)


if __name__ == "__main__":
    main()
