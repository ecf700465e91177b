"""Refusal before the model: how answer.min_similarity separates unanswerable questions from answerable
ones on the dev set, per question language, for the KB's embedder.

    python tests/bench/bench_retrieval.py      # builds the dev-set KB once
    python tests/bench/bench_refusal.py [--home .bench/kbhome] [--kb devset] [--json]

For each question: the answer chain's retrieval (retrieval.k hybrid hits), then the best raw cosine
similarity of the question to those passages, which is what the refusal check compares with the
threshold. Printed per threshold and language: unanswerable questions refused (want all), answerable
questions whose evidence was retrieved but refused (want none), all answerable refused. The row marked
* is the embedder's calibrated default (kb.ingest.embed.REFUSAL_SIMILARITY).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--kb", default="devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import collapse, load_questions
    from kb.lang import LANGUAGES, language

    base = KnowledgeBase.open(args.kb, settings=Settings(home=args.home), create=False)
    rows = []
    for q in load_questions(args.questions):
        hits = base.search(q.question, k=base.settings.retrieval.k)
        sims = base.passage_similarity(q.question, [h.chunk_id for h in hits]) or {}
        found = bool(q.evidence) and any(any(e in collapse(h.text) for e in q.evidence) for h in hits)
        rows.append({"id": q.id, "lang": language(q.question), "answerable": bool(q.evidence), "found": found,
                     "best": max(sims.values(), default=0.0)})
    embedder = base.embedder()
    defaults = {lang: embedder.refusal_similarity(lang) for lang in LANGUAGES}
    table = []
    for t in sorted(set(np.round(np.arange(0.80, 0.90, 0.005), 3)) | set(defaults.values())):
        for lang in LANGUAGES:
            mine = [r for r in rows if r["lang"] == lang]
            table.append({"threshold": float(t), "lang": lang, "default": defaults[lang] == t,
                          **{k: f"{sum(r['best'] < t for r in sel)}/{len(sel)}" for k, sel in (
                              ("unanswerable_refused", [r for r in mine if not r["answerable"]]),
                              ("found_but_refused", [r for r in mine if r["found"]]),
                              ("answerable_refused", [r for r in mine if r["answerable"]]))}})
    if args.json:
        print(json.dumps({"embedder": embedder.model_id, "defaults": defaults, "rows": rows, "table": table}))
        return
    print(f"embedder {embedder.model_id}; calibrated defaults {defaults}")
    print(f"{'threshold':>10s} {'lang':>5s} {'unanswerable refused':>22s} {'found but refused':>18s} "
          f"{'answerable refused':>19s}")
    for r in table:
        mark = "*" if r["default"] else " "
        print(f"{r['threshold']:>9.3f}{mark} {r['lang']:>5s} {r['unanswerable_refused']:>22s} "
              f"{r['found_but_refused']:>18s} {r['answerable_refused']:>19s}")


if __name__ == "__main__":
    main()
