"""Refusal before the model: how the refusal similarities separate unanswerable questions from answerable
ones on the dev set, per pair of question language and passage language, for the KB's embedder.

    python tests/bench/bench_retrieval.py      # builds the dev-set KB once
    python tests/bench/bench_refusal.py [--home .bench/kbhome] [--kb devset] [--json]

For each question: the answer chain's retrieval (retrieval.k hybrid hits), then each passage's cosine
similarity to the question, raw and in the KB's language-centred space. The chain answers when any passage
reaches the threshold of its pair (kb/answer/chain.py: raw cosine for a passage in the question's language, centred
across languages; kb.ingest.embed.REFUSAL_SIMILARITY). Printed per group (en, zh, zh-en, en-zh: the
question's and the evidence's language; none-en, none-zh: unanswerable): refused before (one raw threshold
per question language, over every passage, as kb did before thresholds per pair) and now; then, per pair,
a sweep of its threshold with the others at their defaults (row *: the default): unanswerable questions
refused (want all), questions whose evidence was retrieved in that pair but refused (want none), all
answerable refused; then how raw and centred similarity separate each pair across languages.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PAIRS = (("en", "en"), ("zh", "zh"), ("zh", "en"), ("en", "zh"))


def collect(base, questions) -> list[dict]:
    """Per question: its group, whether answerable, and per hit (passage language, raw, centred, holds evidence)."""
    from kb.eval import collapse
    from kb.text.lang import language

    rows = []
    for q in questions:
        hits = base.search(q.question, k=base.settings.retrieval.k)
        sims = base.retriever.passage_similarities(q.question, {h.chunk_id: language(h.text) for h in hits}) or {}
        lang = language(q.question)
        group = q.group if q.answerable else f"none-{lang}"
        rows.append({"id": q.id, "lang": lang, "group": group, "answerable": q.answerable, "hits": [
            {"lang": language(h.text), "raw": sims[h.chunk_id][0], "centred": sims[h.chunk_id][1],
             "evidence": bool(q.evidence) and any(e in collapse(h.text) for e in q.evidence)}
            for h in hits if h.chunk_id in sims]})
    return rows


FLOOR: dict[tuple[str, str], float] = {}  # the embedder's raw floor across languages, set in main()


def answered(row: dict, thresholds: dict[tuple[str, str], float]) -> bool:
    """The chain's decision: some passage reaches its pair's threshold (raw within a language, centred across,
    where the raw cosine must also reach the pair's floor)."""
    for h in row["hits"]:
        pair = (row["lang"], h["lang"])
        t = thresholds[pair]
        if t <= 0 or (h["raw" if h["lang"] == row["lang"] else "centred"] >= t and h["raw"] >= FLOOR.get(pair, 0)):
            return True
    return False


def answered_before(row: dict, thresholds: dict[tuple[str, str], float]) -> bool:
    """Before thresholds per pair: the question language's raw threshold against every passage."""
    t = thresholds[(row["lang"], row["lang"])]
    return t <= 0 or any(h["raw"] >= t for h in row["hits"])


def counts(rows: list[dict], decide) -> dict[str, str]:
    """Refused: unanswerable, evidence retrieved, all answerable ('refused/questions')."""
    def share(sel: list[dict]) -> str:
        return f"{sum(not decide(r) for r in sel)}/{len(sel)}"
    return {"unanswerable_refused": share([r for r in rows if not r["answerable"]]),
            "found_but_refused": share([r for r in rows if any(h["evidence"] for h in r["hits"])]),
            "answerable_refused": share([r for r in rows if r["answerable"]])}


def separation(rows: list[dict], pair: tuple[str, str], kind: str) -> dict:
    """For one pair across languages (its dev-set group, e.g. zh-en): the highest threshold at which every question
    of the group whose evidence was retrieved still has a passage of the pair over it, and how many unanswerable
    questions with passages of the pair then have none over it (so that, by this pair alone, they are refused)."""
    lang, other = pair
    best = [max(h[kind] for h in r["hits"] if h["lang"] == other) for r in rows
            if r["group"] == f"{lang}-{other}" and any(h["evidence"] and h["lang"] == other for h in r["hits"])]
    negative = [max(h[kind] for h in r["hits"] if h["lang"] == other) for r in rows
                if r["lang"] == lang and not r["answerable"] and any(h["lang"] == other for h in r["hits"])]
    t = min(best, default=0.0)
    return {"pair": "-".join(pair), "similarity": kind, "threshold": round(t, 3), "evidence_questions": len(best),
            "unanswerable_refused": f"{sum(v < t for v in negative)}/{len(negative)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--kb", default="devset")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import load_questions

    base = KnowledgeBase.open(args.kb, settings=Settings(home=args.home), create=False)
    rows = collect(base, load_questions(args.questions))
    embedder = base.embedder()
    defaults = {pair: embedder.refusal_similarity(*pair) for pair in PAIRS}
    FLOOR.update({pair: embedder.refusal_floor(*pair) for pair in PAIRS if pair[0] != pair[1]})
    groups = sorted({r["group"] for r in rows})
    summary = [{"group": g, "before": counts([r for r in rows if r["group"] == g], lambda r: answered_before(r, defaults)),
                "now": counts([r for r in rows if r["group"] == g], lambda r: answered(r, defaults))} for g in groups]
    sweep = []
    for pair in PAIRS:
        mine = [r for r in rows if r["lang"] == pair[0]]
        grid = np.arange(0.80, 0.90, 0.005) if pair[0] == pair[1] else np.arange(0.05, 0.40, 0.01)
        for t in sorted(set(np.round(grid, 3)) | {defaults[pair]}):
            chosen = {**defaults, pair: float(t)}
            evidence_here = [r for r in mine if any(h["evidence"] and h["lang"] == pair[1] for h in r["hits"])]
            sweep.append({"pair": "-".join(pair), "threshold": float(t), "default": bool(defaults[pair] == t),
                          **counts(mine, lambda r, c=chosen: answered(r, c)),
                          "pair_evidence_refused": counts(evidence_here, lambda r, c=chosen: answered(r, c))[
                              "answerable_refused"]})
    spaces = [separation(rows, pair, kind) for pair in PAIRS if pair[0] != pair[1] for kind in ("raw", "centred")]
    if args.json:
        print(json.dumps({"embedder": embedder.model_id, "defaults": {"-".join(k): v for k, v in defaults.items()},
                          "rows": rows, "summary": summary, "sweep": sweep, "spaces": spaces}))
        return
    print(f"embedder {embedder.model_id}; calibrated defaults "
          + ", ".join(f"{a}->{b} {v}" for (a, b), v in defaults.items()))
    print(f"\n{'group':>8s} {'refused before: unanswerable / evidence retrieved / answerable':>64s}   now")
    for s in summary:
        b, n = s["before"], s["now"]
        print(f"{s['group']:>8s} {b['unanswerable_refused']:>22s} {b['found_but_refused']:>20s} "
              f"{b['answerable_refused']:>20s}   {n['unanswerable_refused']} / {n['found_but_refused']} / "
              f"{n['answerable_refused']}")
    print(f"\n{'pair':>6s} {'threshold':>10s} {'unanswerable refused':>21s} {'pair evidence refused':>22s} "
          f"{'found but refused':>18s} {'answerable refused':>19s}")
    for r in sweep:
        mark = "*" if r["default"] else " "
        print(f"{r['pair']:>6s} {r['threshold']:>9.3f}{mark} {r['unanswerable_refused']:>21s} "
              f"{r['pair_evidence_refused']:>22s} {r['found_but_refused']:>18s} {r['answerable_refused']:>19s}")
    print("\nacross languages, raw vs centred: the threshold that keeps every question whose evidence was retrieved "
          "in the pair, and the unanswerable questions that pair alone then refuses")
    for s in spaces:
        print(f"  {s['pair']:>6s} {s['similarity']:>8s}: threshold {s['threshold']:.3f} "
              f"({s['evidence_questions']} questions), unanswerable refused {s['unanswerable_refused']}")


if __name__ == "__main__":
    main()
