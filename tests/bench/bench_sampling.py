"""Which llama.cpp sampling setting keeps the embedded SmolLM2 from looping, measured on the dev set.

    python tests/bench/bench_sampling.py --kb devset [--limit 34]

For each English answerable question of tests/devset/qa.jsonl the answer prompt is built once by kb's
chain (generate mode, the model's default budget), then answered by the packaged SmolLM2 GGUF with each
variant below. Reported per variant: how often the loop guard would have had to stop the answer (the
model repeated a sentence or a long run), how often the answer holds an answer keyword, the mean length
of what the guard lets through, and seconds per answer; the first variant (no penalty) is the baseline
of the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kb import KnowledgeBase
from kb.answer.loop_guard import LoopGuard
from kb.answer.packing import answer_budget, answer_mode, fit, merge_hits
from kb.llm.no_repeat import NoRepeatNGram

ROOT = Path(__file__).resolve().parents[2]


VARIANTS = {
    "none (baseline)": {"repeat_penalty": 1.0},
    "repeat_penalty 1.1": {"repeat_penalty": 1.1},
    "repeat_penalty 1.3": {"repeat_penalty": 1.3},
    "frequency 0.5": {"frequency_penalty": 0.5},
    "presence 0.5": {"presence_penalty": 0.5},
    "no-repeat 4-gram": {"ngram": 4},
}


def guarded(text: str) -> tuple[str, bool]:
    guard = LoopGuard()
    shown = "".join(guard.feed(text[i:i + 4]) for i in range(0, len(text), 4)) + guard.flush()
    return shown, guard.stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kb", default="devset")
    parser.add_argument("--limit", type=int, default=34)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (ROOT / "tests/devset/qa.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.get("lang") == "en" and r.get("answerable", True)][: args.limit]
    kb = KnowledgeBase.open(args.kb, create=False)
    backend = kb.backend()
    settings = kb.settings.answer.model_copy(update={"mode": "generate"})
    answer_tokens, _ = answer_budget(backend, settings)
    prompts = []
    for r in rows:
        hits = kb.search(r["question"], k=settings.passages)
        _, readable = answer_mode(settings, backend, "en", merge_hits(hits, kb.span_text))
        _, _, messages, _ = fit(backend, settings, r["question"], readable, [], "en")
        prompts.append((r, [{"role": m.role, "content": m.content} for m in messages]))
    results = {}
    for name, variant in VARIANTS.items():
        stops = keywords = 0
        length = seconds = 0.0
        for r, messages in prompts:
            extra = dict(variant)
            ngram = extra.pop("ngram", None)
            if ngram:
                extra["logits_processor"] = [NoRepeatNGram(ngram)]
            start = time.perf_counter()
            out = backend.llm.create_chat_completion(messages=messages, max_tokens=answer_tokens, temperature=0.1,
                                                     top_p=0.8, seed=0, **extra)
            seconds += time.perf_counter() - start
            shown, stopped = guarded(out["choices"][0]["message"]["content"] or "")
            stops += stopped
            keywords += any(k.lower() in shown.lower() for k in r.get("answer_keywords", []))
            length += len(shown)
        n = len(prompts)
        results[name] = {"guard_stops": stops / n, "keyword_in_answer": keywords / n, "shown_chars": length / n,
                         "seconds": seconds / n}
        print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
    base = results["none (baseline)"]
    print(f"{len(prompts)} English dev-set questions, answer budget {answer_tokens} tokens")
    print(f"{'variant':22s} {'guard stops':>11s} {'keyword':>8s} {'chars':>6s} {'s/answer':>8s} {'time ratio':>10s}")
    for name, m in results.items():
        print(f"{name:22s} {m['guard_stops']:11.3f} {m['keyword_in_answer']:8.3f} {m['shown_chars']:6.0f} "
              f"{m['seconds']:8.2f} {m['seconds'] / base['seconds']:10.2f}")


if __name__ == "__main__":
    main()
