"""The dictionary search across languages on the public dev set: kb hybrid with and without the question's
CC-CEDICT gloss (kb/retrieval/glossary.py) searched by keyword as one more RRF ranking, every row in the same run.

    python tests/bench/bench_glossary.py [--home .bench/kbhome] [--weights 0.5,1,1.5] [--variants] [--json]

It only searches the dev-set KB (tests/bench/bench_retrieval.py builds it) and never writes to it. Rows
(hit@5 per language group: en, zh, zh-en = Chinese question / English evidence, en-zh):
- kb hybrid, dictionary off: retrieval.dictionary_weight 0, the dense and keyword rankings alone;
- + dictionary at weight w: the same search with the gloss's keyword ranking fused by RRF at weight w
  (retrieval.dictionary_weight, kb/retrieval/retriever.py: kb's own wiring, so the row measures what ships);
- gloss alone: the gloss searched by keyword by itself (how often its own top 5 holds the answer);
- + translation (reference): the question's translation (tests/devset/translations.jsonl) as `also`, what
  a chat model that translates well gives;
- with --variants, other caps of kb/retrieval/glossary.py and kb/retrieval/glossary_build.py at --variant-weight (each rebuilds
  the lookup).
Then each row's ratio to "dictionary off", how many questions got a gloss and how long glossing took.
The glossary's lookup is cached under --glossary-home/models (KB_HOME for kb.retrieval.glossary's default folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("all", "en", "zh", "zh-en", "en-zh")
# Caps tried by --variants: (label, {constant of kb.retrieval.glossary or kb.retrieval.glossary_build: value}).
VARIANTS = [
    ("MAX_TERMS=8", {"MAX_TERMS": 8}), ("MAX_TERMS=20", {"MAX_TERMS": 20}),
    ("GLOSSES_PER_WORD=1", {"GLOSSES_PER_WORD": 1}), ("GLOSSES_PER_WORD=3", {"GLOSSES_PER_WORD": 3}),
    ("HEADWORDS_PER_EN=1", {"HEADWORDS_PER_EN": 1}), ("HEADWORDS_PER_EN=3", {"HEADWORDS_PER_EN": 3}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bench" / "kbhome")
    parser.add_argument("--kb", default="devset")
    parser.add_argument("--glossary-home", type=Path, default=REPO / ".bench" / "glossary")
    parser.add_argument("--questions", type=Path, default=REPO / "tests" / "devset" / "qa.jsonl")
    parser.add_argument("--translations", type=Path, default=REPO / "tests" / "devset" / "translations.jsonl")
    parser.add_argument("--weights", default="0.5,1,1.5")
    parser.add_argument("--variants", action="store_true", help="also other caps (rebuilds the lookup each)")
    parser.add_argument("--variant-weight", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["KB_HOME"] = str(args.glossary_home)  # read by kb.config.default_models_dir at call time

    from kb.eval import load_questions
    from kb.retrieval import glossary

    questions = [q for q in load_questions(args.questions) if q.evidence]
    translations = {r["id"]: r["translation"] for r in map(json.loads, args.translations.read_text().splitlines())}
    t0 = time.perf_counter()
    glossary.load()
    load_s = time.perf_counter() - t0
    rows: dict[str, dict] = {"kb hybrid, dictionary off": _run(args, questions, 0.0)}
    for w in (float(x) for x in args.weights.split(",")):
        rows[f"+ dictionary, weight {w:g}"] = _run(args, questions, w)
    rows["gloss alone (bm25)"] = _run(args, questions, 0.0, gloss_only=True)
    rows["+ translation (reference)"] = _run(args, questions, 0.0, translations=translations)
    if args.variants:
        for label, caps in VARIANTS:
            rows[f"  {label}, weight {args.variant_weight:g}"] = _variant(args, questions, caps)
    _report(rows, load_s, args.json)


def _run(args, questions, weight: float, gloss_only: bool = False, translations=None) -> dict:
    """hit ranks of every question for one configuration, with gloss statistics."""
    from kb import KnowledgeBase
    from kb.config import Settings
    from kb.eval import Outcome, first_hit_rank, summarize
    from kb.retrieval.glossary import gloss

    settings = Settings(home=args.home, retrieval={"dictionary_weight": weight})
    base = KnowledgeBase.open(args.kb, settings=settings, create=False)
    if not base.documents():
        raise SystemExit(f"KB '{args.kb}' in {args.home} is empty: run tests/bench/bench_retrieval.py first")
    outcomes, fused, glossed, words, seconds = [], 0, {}, [], []
    try:
        for q in questions:
            t0 = time.perf_counter()
            text = gloss(q.question)
            seconds.append(time.perf_counter() - t0)
            glossed[q.group] = glossed.get(q.group, 0) + bool(text)
            words.append(len(text.split()) if text else 0)
            also = [translations[q.id]] if translations and q.id in translations else None
            if gloss_only:
                hits = base.search(text, k=10, mode="bm25") if text else []
            else:
                hits = base.search(q.question, k=10, mode="hybrid", also=also)
            fused += any("dictionary" in (h.ranks or {}) for h in hits)
            outcomes.append(Outcome(q, first_hit_rank([h.text for h in hits], q.evidence), 0.0))
    finally:
        base.close()
    if weight > 0 and not fused:
        raise SystemExit("no hit carried a 'dictionary' rank: retrieval.dictionary_weight is not wired")
    return {"summary": summarize(outcomes), "fused": fused, "glossed": glossed,
            "gloss_words": statistics.mean(words), "gloss_ms_p50": 1000 * statistics.median(seconds),
            "gloss_ms_p95": 1000 * sorted(seconds)[int(0.95 * (len(seconds) - 1))]}


def _variant(args, questions, caps: dict) -> dict:
    """One row with caps changed (the lookup is rebuilt for them), then put back: MAX_TERMS is the gloss's
    (kb.retrieval.glossary), the others shape the lookup (kb.retrieval.glossary_build, whose cache records them); a cap both use
    (MAX_PHRASE, imported by kb.retrieval.glossary) is set in both."""
    from kb.retrieval import glossary, glossary_build

    saved = [(m, name, getattr(m, name)) for name in caps for m in (glossary, glossary_build) if hasattr(m, name)]
    try:
        for m, name, _ in saved:
            setattr(m, name, caps[name])
        glossary._open.clear()  # the next load checks the cache against the new caps and rebuilds it
        return _run(args, questions, args.variant_weight)
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
        glossary._open.clear()


def _report(rows: dict[str, dict], load_s: float, as_json: bool) -> None:
    table = {name: {g: (r["summary"]["overall"] if g == "all" else r["summary"]["groups"].get(g, {})).get("hit@5", 0.0)
                    for g in GROUPS} for name, r in rows.items()}
    if as_json:
        print(json.dumps({"hit@5": table, "glossary_load_s": load_s, "rows": rows}, default=str))
        return
    counts = {g: rows["kb hybrid, dictionary off"]["summary"][("overall" if g == "all" else "groups")]
              for g in GROUPS}
    sizes = {g: (c if g == "all" else c.get(g, {})).get("questions", "") for g, c in counts.items()}
    print(f"{'hit@5':34s}" + "".join(f"{g + ' (' + str(sizes[g]) + ')':>13s}" for g in GROUPS))
    for name, row in table.items():
        print(f"{name:34s}" + "".join(f"{row[g]:13.3f}" for g in GROUPS))
    base = table["kb hybrid, dictionary off"]
    print(f"\n{'ratio to dictionary off':34s}")
    for name, row in table.items():
        cells = "".join(f"{row[g] / base[g]:13.2f}" if base[g] else f"{'-':>13s}" for g in GROUPS)
        print(f"{name:34s}" + cells)
    print(f"\nglossary load (first in this process): {load_s * 1000:.0f} ms")
    for name, r in rows.items():
        print(f"{name:34s} glossed {r['glossed']}, {r['gloss_words']:.1f} words, gloss p50 "
              f"{r['gloss_ms_p50']:.2f} ms / p95 {r['gloss_ms_p95']:.2f} ms, hits fused from it: {r['fused']}")


if __name__ == "__main__":
    main()
