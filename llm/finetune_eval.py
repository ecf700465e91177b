"""Evaluate a fine-tuned model: generate answers for an eval file, score ROUGE-1/2/L and BLEU-4.

The scores follow THUDM's ptuning/main.py so numbers compare with theirs: ROUGE on jieba words
(the `rouge_chinese` package's rules: ROUGE-1/2 count n-gram *sets*, ROUGE-L the longest common
subsequence of the word lists; each F = 2PR/(P+R)), BLEU-4 on characters (nltk's
`sentence_bleu` with smoothing method3: the k-th n-gram order with no match counts 1/(2^k·total)),
each as a percentage averaged over examples. Written here in plain Python so every number can be
checked by hand; it gave the same four scores as rouge_chinese 1.0.3 + nltk 3.10.4 running THUDM's
code on 306 sentence pairs. It leaves out corpus-level BLEU and multiple references.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def words(text: str) -> list[str]:
    """jieba's segmentation of `text`, whitespace dropped."""
    import jieba

    jieba.setLogLevel(60)  # jieba prints its dictionary loading to stderr otherwise
    return [w for w in jieba.cut(text) if w.strip()]


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    """F1 over the sets of n-grams (rouge_chinese's counting)."""
    h, r = _ngrams(hyp, n), _ngrams(ref, n)
    overlap = len(h & r)
    p = overlap / len(h) if h else 0.0
    rec = overlap / len(r) if r else 0.0
    return 2.0 * p * rec / (p + rec + 1e-8)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: list[str], ref: list[str]) -> float:
    """F1 of the longest common subsequence: R = lcs/|ref|, P = lcs/|hyp| (rouge_chinese's ROUGE-L)."""
    if not hyp or not ref:
        return 0.0
    lcs = lcs_length(hyp, ref)
    r, p = lcs / len(ref), lcs / len(hyp)
    return 2.0 * p * r / (p + r + 1e-8)


def bleu4(hyp: str, ref: str) -> float:
    """nltk sentence_bleu on characters, weights 1/4 each, smoothing method3."""
    h, r = list(hyp), list(ref)
    if not h:
        return 0.0
    logs, k = [], 1
    for n in range(1, 5):
        hc = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
        rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
        matched = sum(min(c, rc[g]) for g, c in hc.items())
        total = max(1, sum(hc.values()))
        if matched == 0:
            if n == 1:
                return 0.0  # nltk returns 0 when not even one character matches
            logs.append(math.log(1 / (2**k * total)))
            k += 1
        else:
            logs.append(math.log(matched / total))
    bp = 1.0 if len(h) > len(r) else math.exp(1 - len(r) / len(h))
    return bp * math.exp(sum(logs) / 4)


def score(prediction: str, reference: str) -> dict[str, float]:
    """The four scores of one example, in percent (ROUGE on jieba words, BLEU on characters)."""
    hyp, ref = words(prediction), words(reference)
    if hyp and ref:
        rouge = {"rouge-1": rouge_n(hyp, ref, 1), "rouge-2": rouge_n(hyp, ref, 2), "rouge-l": rouge_l(hyp, ref)}
    else:  # THUDM scores an empty side as 0
        rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    return {k: round(v * 100, 4) for k, v in {**rouge, "bleu-4": bleu4(prediction, reference)}.items()}


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean of the per-example scores."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("need as many predictions as references, at least one")
    per = [score(p, r) for p, r in zip(predictions, references)]
    return {m: round(sum(s[m] for s in per) / len(per), 4) for m in METRICS}


def evaluate(backend, records, *, max_new_tokens: int = 256, on_step=None) -> dict:
    """Greedy answers of `backend` for `records` and their scores (the JSON `kb finetune-eval` writes)."""
    predictions = []
    for i, rec in enumerate(records):
        predictions.append(backend.generate(rec.messages(), max_new_tokens=max_new_tokens, temperature=0))
        if on_step:
            on_step(i + 1, len(records))
    references = [r.response for r in records]
    return {
        "metrics": corpus_scores(predictions, references),
        "n": len(records),
        "examples": [{"prompt": r.prompt, "reference": r.response, "prediction": p}
                     for r, p in zip(records, predictions)],
    }


def write_report(report: dict, path: str | Path) -> Path:
    """Save the report as UTF-8 JSON (Chinese kept readable)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return path
