"""P6 and P7: answer latency and memory with the embedded models (MiniLM embedder + SmolLM2-135M GGUF).

    python tests/bench/bench_answer.py            # builds a temporary KB over docs/samples
    python tests/bench/bench_answer.py --runs 8

P6: time to first token and total time of `kb ask` with a ~1.5K-token prompt:
  - cold: a fresh `kb ask` process, from process start to the first byte of the answer on stdout;
  - warm: `KnowledgeBase.stream()` in this process with the models loaded (median of --runs questions),
    next to the bare backend streaming the very same messages (the chain's own overhead is the difference).
  llama.cpp's prompt cache is reset before every warm run, so no run reuses another's prefill.
P7: peak RSS of this process (models loaded, after the warm runs) and of the cold `kb ask` process.
Goals: warm TTFT <= 2 s, peak RSS <= 1.5 GB. Everything is measured in one run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "How long are hourly snapshots kept?",
    "Which port on the desk is the isolated test network?",
    "How do I give a Debian server a static address?",
    "What are the addresses of the lab DNS servers?",
    "How do remote staff connect to the office network?",
    "Where can I restore a deleted file from myself?",
    "What is the staff Wi-Fi network called?",
    "Are laptops backed up?",
]
PROMPT_TOKENS = 1536
ANSWER_TOKENS = 128


def settings_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update({"KB_HOME": str(home), "KB_CONFIG": str(home / "none.yaml"), "PYTHONUNBUFFERED": "1",
                "KB_RETRIEVAL__K": "12", "KB_ANSWER__ANSWER_TOKENS": str(ANSWER_TOKENS),
                "KB_ANSWER__MAX_CONTEXT_TOKENS": str(PROMPT_TOKENS + ANSWER_TOKENS),
                "KB_ANSWER__MIN_SIMILARITY": "0", "KB_LLM__TEMPERATURE": "0"})
    return env


def cold(env: dict[str, str], question: str) -> dict[str, float]:
    """A fresh `kb ask` process: seconds to its first stdout byte and to its exit."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "ask", question, "--kb", "bench"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = None
    while proc.stdout.read(1):
        if first is None:
            first = time.perf_counter() - start
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"kb ask failed: {proc.stderr.read().decode()}")
    return {"first_byte_s": first, "total_s": total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def warm(kb, questions: list[str]) -> dict[str, object]:
    from kb.answer.prompts import answer_messages

    backend = kb.backend()
    chain_ttft, chain_total, raw_ttft, prompt_tokens = [], [], [], []
    kb.ask(questions[0])  # load the embedder, jieba and the model's graph once
    for q in questions:
        backend.llm.reset()
        answer = kb.stream(q).answer()
        chain_ttft.append(answer.timings.first_token)
        chain_total.append(answer.timings.total)
        prompt_tokens.append(answer.prompt_tokens)
        messages = answer_messages(kb.settings.answer, q, list(answer.passages), [], answer.language)
        backend.llm.reset()
        start = time.perf_counter()
        for _ in backend.stream(messages, max_new_tokens=1, temperature=0):
            break
        raw_ttft.append(time.perf_counter() - start)
    return {"ttft_s": statistics.median(chain_ttft), "total_s": statistics.median(chain_total),
            "raw_backend_ttft_s": statistics.median(raw_ttft), "prompt_tokens": statistics.median(prompt_tokens),
            "ttft_all_s": [round(t, 3) for t in chain_ttft]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=len(QUESTIONS), help="warm questions to time")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kb-bench-answer-"))
    try:
        env = settings_env(home)
        os.environ.update(env)
        for key in [k for k in os.environ if k.startswith("KB_") and k not in env]:
            del os.environ[key]
        subprocess.run([sys.executable, "-m", "kb.cli", "ingest", str(ROOT / "docs" / "samples"), "--kb", "bench",
                        "-q"], env=env, check=True, capture_output=True)
        cold_run = cold(env, QUESTIONS[0])

        from kb import KnowledgeBase

        with KnowledgeBase.open("bench", create=False) as kb:
            warm_run = warm(kb, QUESTIONS[: args.runs])
        status = Path("/proc/self/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        result = {
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "p6_cold_first_byte_s": round(cold_run["first_byte_s"], 3), "p6_cold_total_s": round(cold_run["total_s"], 3),
            "p6_warm_ttft_s": round(warm_run["ttft_s"], 3), "p6_warm_total_s": round(warm_run["total_s"], 3),
            "p6_warm_ttft_all_s": warm_run["ttft_all_s"],
            "p6_warm_raw_backend_ttft_s": round(warm_run["raw_backend_ttft_s"], 3),
            "p6_chain_overhead_ratio": round(warm_run["ttft_s"] / warm_run["raw_backend_ttft_s"], 3),
            "p6_prompt_tokens_median": warm_run["prompt_tokens"], "answer_tokens_max": ANSWER_TOKENS,
            "p6_warm_ttft_vs_goal_2s": round(warm_run["ttft_s"] / 2.0, 3),
            "p7_peak_rss_mb_warm_process": round(hwm / 1024, 1),
            "p7_peak_rss_mb_cold_kb_ask": round(cold_run["peak_rss_mb"], 1),
            "p7_vs_goal_1536mb": round(max(hwm / 1024, cold_run["peak_rss_mb"]) / 1536, 3),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
