"""Follow-up rewriting: none vs the rule vs the embedded SmolLM2, on 8 two-turn conversations over
docs/samples. Counts the follow-ups whose rewritten query puts the right section first.

    python tests/bench/bench_rewrite.py

This measurement chose `answer.rewrite: auto` = rule for the embedded model (README, "Asking questions").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [  # (first question, its answer, follow-up, section that answers the follow-up)
    ("How do remote staff get a VPN key?", "Request a key from the IT desk.", "How long are they valid?", "VPN"),
    ("How often does the file server take snapshots?", "Every hour.", "And how long are those kept?", "Schedule"),
    ("What is the staff Wi-Fi network called?", "harbor-staff.", "What about guests?", "Wi-Fi"),
    ("What are the lab DNS servers?", "10.20.0.53 and 10.20.0.54.", "What if a name does not resolve?",
     "Name resolution"),
    ("How do I give a Debian server a static address?", "Edit /etc/network/interfaces.", "Which range may I use?",
     "Wired connections"),
    ("Are laptops backed up?", "No.", "Where does project data live then?", "Backup policy"),
    ("一线城市的住宿标准是多少？", "每晚600元。", "那省会城市呢？", "住宿标准"),
    ("出差可以坐什么交通工具？", "高铁二等座或经济舱。", "超过六小时呢？", "交通标准"),
]


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="kb-bench-rewrite-"))
    for key in [k for k in os.environ if k.startswith("KB_")]:
        del os.environ[key]
    os.environ.update({"KB_HOME": str(home), "KB_CONFIG": str(home / "none.yaml")})
    from kb import KnowledgeBase, load_settings
    from kb.answer.prompts import rewrite_messages
    from kb.answer.rewrite import clean_model_rewrite, rule_rewrite

    try:
        settings = load_settings(llm={"temperature": 0})
        with KnowledgeBase.open("rewrite", settings=settings) as kb:
            kb.ingest(ROOT / "docs" / "samples")
            backend = kb.backend()
            score = {"none": 0, "rule": 0, "model": 0}
            for q1, a1, q2, want in PAIRS:
                history = [(q1, a1)]
                start = time.perf_counter()
                reply = backend.generate(rewrite_messages(settings.answer, q2, history), max_new_tokens=64,
                                         temperature=0)
                seconds = time.perf_counter() - start
                for name, query in (("none", q2), ("rule", rule_rewrite(q2, history)),
                                    ("model", clean_model_rewrite(reply, q2) or q2)):
                    ok = kb.search(query, k=1)[0].section.endswith(want)
                    score[name] += ok
                    extra = f"  ({seconds:.1f}s)" if name == "model" else ""
                    print(f"{name:5s} {'right' if ok else 'wrong'}  {query!r}{extra}")
            print({k: f"{v}/{len(PAIRS)}" for k, v in score.items()}, "follow-ups with the right section first")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
