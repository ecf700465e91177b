"""Retrieval quality on the public dev set: kb's bilingual default against today's English-only embedder
and the LangChain tutorial pipeline, in the same run.

    tests/devset/fetch_corpus.sh
    python tests/bench/bench_retrieval.py [--home .bench/kbhome] [--torch] [--json]

Rows (hit@5 per language group: en, zh, zh→en = Chinese question / English evidence, en→zh):
- kb hybrid / dense: the default (multilingual-e5-small, ONNX int8, language-centred dense index);
- kb hybrid + translation: the same, also searching each question's translation into the other
  language (tests/devset/translations.jsonl stands in for a chat model that translates well: what
  answer.translate_query gives with ChatGLM2 / an OpenAI-compatible model; off for SmolLM2);
- MiniLM hybrid: all-MiniLM-L6-v2 (the default before), same chunking and fusion;
- LangChain tutorial: the parsed text split by RecursiveCharacterTextSplitter(500, 50), embedded by the
  default model, flat inner-product top-k;
- with --torch, kb hybrid / dense on the float32 torch model too (the int8 check; ingest ~10 minutes).
KBs are built in --home on first use and reused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("all", "en", "zh", "zh-en", "en-zh")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--translations", type=Path, default=REPO / "tests" / "devset" / "translations.jsonl")
    parser.add_argument("--torch", action="store_true", help="also the float32 torch model (slow ingest)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus} is missing: run tests/devset/fetch_corpus.sh first")

    from kb.config import MINILM_EMBEDDER
    from kb.eval import load_questions, run_retrieval, summarize

    questions = load_questions(args.questions)
    translations = {r["id"]: r["translation"] for r in map(json.loads, args.translations.read_text().splitlines())}
    default = _kb(args, "devset", {})
    results = {
        "kb hybrid": summarize(run_retrieval(default, questions, "hybrid", 10)),
        "kb dense": summarize(run_retrieval(default, questions, "dense", 10)),
        "kb hybrid + translation": summarize(run_retrieval(default, questions, "hybrid", 10, translations)),
        "kb bm25": summarize(run_retrieval(default, questions, "bm25", 10)),
    }
    results["langchain tutorial"] = _baseline(args.corpus, questions, default.embedder())
    if args.torch:
        fp32 = _kb(args, "devset-torch", {"backend": "torch"})
        results["kb hybrid, fp32 torch"] = summarize(run_retrieval(fp32, questions, "hybrid", 10))
        results["kb dense, fp32 torch"] = summarize(run_retrieval(fp32, questions, "dense", 10))
    minilm = _kb(args, "devset-minilm", {"model": MINILM_EMBEDDER})
    results["MiniLM hybrid (before)"] = summarize(run_retrieval(minilm, questions, "hybrid", 10))
    results["MiniLM dense (before)"] = summarize(run_retrieval(minilm, questions, "dense", 10))
    table = {name: {g: (r["overall"] if g == "all" else r["groups"].get(g, {})).get("hit@5", 0.0) for g in GROUPS}
             for name, r in results.items()}
    if args.json:
        print(json.dumps({"hit@5": table, "details": results}))
        return
    print(f"{'hit@5':26s}" + "".join(f"{g:>8s}" for g in GROUPS))
    for name, row in table.items():
        print(f"{name:26s}" + "".join(f"{row[g]:8.3f}" for g in GROUPS))
    base = table["MiniLM hybrid (before)"]
    print(f"{'kb hybrid - before':26s}" + "".join(f"{100 * (table['kb hybrid'][g] - base[g]):+8.1f}" for g in GROUPS)
          + "  (points)")


def _kb(args, name: str, embedding: dict):
    """The dev-set KB `name` with these embedding settings, ingested on first use."""
    from kb import KnowledgeBase
    from kb.config import Settings

    base = KnowledgeBase.open(name, settings=Settings(home=args.home, embedding=embedding))
    if not base.documents():
        t0 = time.perf_counter()
        report = base.ingest(args.corpus)
        print(f"(ingested {name}: {report.chunks_added} chunks in {time.perf_counter() - t0:.0f} s)")
    return base


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
        _, ids = index.search(embedder.encode([q.question], query=True).astype(np.float32), 10)
        seconds = time.perf_counter() - start
        outcomes.append(Outcome(q, first_hit_rank([chunks[i] for i in ids[0] if i >= 0], q.evidence), seconds))
    return summarize(outcomes)


if __name__ == "__main__":
    main()
