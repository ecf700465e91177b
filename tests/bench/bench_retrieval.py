"""Retrieval quality on the public dev set: kb's default (an ensemble of two embedders) against each embedder
alone, the variants tried for Chinese paraphrases and cross-language questions, and the LangChain tutorial
pipeline, all in the same run.

    tests/devset/fetch_corpus.sh
    python tests/bench/bench_retrieval.py [--home .bench/kbhome] [--torch] [--json]

Rows (hit@5 per language group: en, zh, zh→en = Chinese question / English evidence, en→zh; hit@1 too with
--json):
- kb hybrid / dense: the default (embedding.models: multilingual-e5-small + all-MiniLM-L6-v2, each with its own
  language-centred dense index, fused with BM25 by RRF; a dictionary search across languages);
- e5 alone hybrid (before): the same KB searched with its main embedder only and no dictionary (the default
  before this ensemble); e5 alone dense; "- ensemble": e5 alone with the dictionary;
- MiniLM alone hybrid / dense: all-MiniLM-L6-v2 alone, no dictionary (the default before e5), its own KB;
- variants, each the default plus or minus one thing: without the dictionary search; character bigrams of Chinese
  as one more keyword ranking (paraphrases that jieba splits differently); pseudo-relevance feedback (Rocchio on
  the dense side: the query moved towards its top 3 passages);
- kb hybrid + translation: also searching each question's translation into the other language
  (tests/devset/translations.jsonl stands in for a chat model that translates well);
- LangChain tutorial: RecursiveCharacterTextSplitter(500, 50), the default embedder, flat top-k;
- with --torch, kb hybrid on the float32 torch models too (the int8 check; a slow ingest).
KBs are built in --home on first use and reused.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("all", "en", "zh", "zh-en", "en-zh")
BIGRAM = re.compile(r"(?=([\u4e00-\u9fff]{2}))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--corpus", type=Path, default=REPO / ".corpus" / "devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--translations", type=Path, default=REPO / "tests" / "devset" / "translations.jsonl")
    parser.add_argument("--torch", action="store_true", help="also the float32 torch models (slow ingest)")
    parser.add_argument("--skip", default="", help="comma-separated row names to leave out (quicker runs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus} is missing: run tests/devset/fetch_corpus.sh first")

    from kb.config import MINILM_EMBEDDER
    from kb.eval import load_questions, run_retrieval, summarize

    questions = load_questions(args.questions)
    translations = {r["id"]: r["translation"] for r in map(json.loads, args.translations.read_text().splitlines())}
    default = _kb(args, "devset", {})
    skip = set(filter(None, args.skip.split(",")))
    rows = {
        "kb hybrid (default)": lambda: run_retrieval(default, questions, "hybrid", 10),
        "kb dense": lambda: run_retrieval(default, questions, "dense", 10),
        "kb bm25": lambda: run_retrieval(default, questions, "bm25", 10),
        "e5 alone hybrid (before)": lambda: run_retrieval(Variant(default, ensemble=False, dictionary=False),
                                                          questions, "hybrid", 10),
        "e5 alone dense": lambda: run_retrieval(Variant(default, ensemble=False), questions, "dense", 10),
        "- ensemble (e5 + dictionary)": lambda: run_retrieval(Variant(default, ensemble=False), questions,
                                                              "hybrid", 10),
        "- dictionary": lambda: run_retrieval(Variant(default, dictionary=False), questions, "hybrid", 10),
        "+ zh bigrams": lambda: run_retrieval(Variant(default, bigrams=True), questions, "hybrid", 10),
        "+ dense PRF": lambda: run_retrieval(Variant(default, prf=True), questions, "hybrid", 10),
        "kb hybrid + translation": lambda: run_retrieval(default, questions, "hybrid", 10, translations),
    }
    paraphrase = {r["id"] for r in map(json.loads, args.questions.read_text().splitlines()) if r.get("paraphrase")}
    results, para = {}, {}
    for name, run in rows.items():
        if name not in skip:
            outcomes = run()
            results[name] = summarize(outcomes)
            mine = [o for o in outcomes if o.question.id in paraphrase]
            para[name] = sum(1 for o in mine if o.rank is not None and o.rank <= 5) / max(1, len(mine))
    if "langchain" not in skip:
        results["langchain tutorial"] = _baseline(args.corpus, questions, default.embedder())
    if args.torch:
        fp32 = _kb(args, "devset-torch", {"backend": "torch"})
        results["kb hybrid, fp32 torch"] = summarize(run_retrieval(fp32, questions, "hybrid", 10))
    if "minilm" not in skip:
        minilm = _kb(args, "devset-minilm", {"model": MINILM_EMBEDDER}, {"dictionary_weight": 0})
        for mode in ("hybrid", "dense"):
            outcomes = run_retrieval(minilm, questions, mode, 10)
            results[f"MiniLM alone {mode}"] = summarize(outcomes)
            mine = [o for o in outcomes if o.question.id in paraphrase]
            para[f"MiniLM alone {mode}"] = sum(1 for o in mine if o.rank is not None and o.rank <= 5) / max(1, len(mine))
    table = {name: {g: _group(r, g).get("hit@5", 0.0) for g in GROUPS} for name, r in results.items()}
    for name, row in table.items():
        row["zh paraphrase"] = para.get(name, float("nan"))
    if args.json:
        print(json.dumps({"hit@5": table, "details": results}))
        return
    columns = (*GROUPS, "zh paraphrase")
    print(f"{'hit@5 (hit@1 all, en)':30s}" + "".join(f"{g[:8]:>8s}" for g in columns) + "   hit@1 all / en")
    for name, row in table.items():
        r = results[name]
        print(f"{name:30s}" + "".join(f"{row[g]:8.3f}" for g in columns)
              + f"   {_group(r, 'all').get('hit@1', 0):.3f} / {_group(r, 'en').get('hit@1', 0):.3f}")
    base = table.get("e5 alone hybrid (before)")
    if base and "kb hybrid (default)" in table:
        print(f"{'default - before':30s}" + "".join(
            f"{100 * (table['kb hybrid (default)'][g] - base[g]):+8.1f}" for g in GROUPS) + "  (points)")


def _group(result: dict, group: str) -> dict:
    return result["overall"] if group == "all" else result["groups"].get(group, {})


class Variant:
    """The default KB searched as kb.retrieval.hybrid does, with one thing changed: without its other embedders, without
    the dictionary search, with one more keyword ranking over Chinese character bigrams, or with
    pseudo-relevance feedback on the dense side. Quacks like KnowledgeBase.search for kb.eval.run_retrieval."""

    def __init__(self, base, ensemble: bool = True, dictionary: bool = True, bigrams: bool = False,
                 prf: bool = False) -> None:
        self.base, self.ensemble, self.dictionary, self.prf = base, ensemble, dictionary, prf
        self._bigrams = _BigramIndex(base) if bigrams else None

    def search(self, question: str, k: int = 10, mode: str | None = None, also=None) -> list:
        from kb.retrieval.hybrid import DenseSide, search
        from kb.retrieval.retriever import indexed_by, query_embedding

        retriever = self.base.retriever
        sides = [DenseSide(None, query_embedding(self.base.embedder()))]
        if self.ensemble:
            sides += [DenseSide(e.model_id, query_embedding(e), indexed_by(e)) for e in retriever.ensemble()]
        if self.prf:
            sides = [DenseSide(s.model, _rocchio(self.base, s, question), s.reads) for s in sides]
        extra = {}
        if self._bigrams is not None:
            extra["bigrams"] = (self._bigrams.ranking(question), self.base.settings.retrieval.bm25_weight)
        store = retriever.store()
        return search(store, sides, question, self.base.settings.retrieval, k, mode,
                      dictionary=retriever.dictionary_query(question, mode) if self.dictionary else None,
                      extra_rankings=extra)


class _BigramIndex:
    """BM25 over the Chinese character bigrams of every chunk (rank_bm25, the bench extra)."""

    def __init__(self, base) -> None:
        from rank_bm25 import BM25Okapi

        store = base.retriever.store()
        ids = [int(i) for i in store.chunk_ids_of([d.doc_id for d in store.documents()])]
        rows = store.chunks_by_id(ids)
        self.ids = [i for i in ids if i in rows]
        self.bm25 = BM25Okapi([BIGRAM.findall(rows[i]["text"]) or ["-"] for i in self.ids])

    def ranking(self, question: str, n: int = 50) -> list[int]:
        grams = BIGRAM.findall(question)
        if not grams:
            return []
        scores = self.bm25.get_scores(grams)
        top = np.argsort(-scores)[:n]
        return [self.ids[i] for i in top if scores[i] > 0]


def _rocchio(base, side, question: str, beta: float = 0.5, top: int = 3):
    """embed(text) with the question's vector moved towards the mean of its first `top` dense hits (Rocchio's
    positive feedback), computed here, on the thread that owns the store (the main embedder's vectors only:
    the ensemble's are not read back by chunk id)."""
    vector, share = side.embed(question)
    if side.model is None:
        store = base.retriever.store()
        first = store.dense_query(None, None)(vector, top, _language(question))
        docs = store.vectors_of([cid for cid, _ in first])
        if docs:
            moved = vector + beta * np.mean(list(docs.values()), axis=0)
            vector = (moved / np.linalg.norm(moved)).astype(np.float32)

    def embed(text: str):
        return (vector, share) if text == question else side.embed(text)
    return embed


def _language(text: str) -> str:
    from kb.text.lang import language

    return language(text)


def _kb(args, name: str, embedding: dict, retrieval: dict | None = None):
    """The dev-set KB `name` with these embedding (and retrieval) settings, ingested on first use."""
    from kb import KnowledgeBase
    from kb.config import Settings

    base = KnowledgeBase.open(name, settings=Settings(home=args.home, embedding=embedding, retrieval=retrieval or {}))
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
