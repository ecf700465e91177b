"""Start-up of `kb ask`: how soon a fresh process prints the first byte of its answer, and where the seconds go.

    python tests/bench/bench_startup.py                  # 3 fresh processes per variant, 6 warm questions
    python tests/bench/bench_startup.py --runs 5 --warm 8 --baseline HEAD~3

The README quick start, measured: a temporary KB_HOME, `kb ingest docs/samples --kb demo`, then
`kb ask "How long are hourly snapshots kept?" --kb demo` in a fresh process, its stdout read until the first
byte and then to its exit. Three variants, run in turn so that they share whatever else loads the machine:

  baseline  kb as it was at --baseline (default: before kb/answer/loading.py), exported from git into a temporary
            folder and imported in place of this checkout: everything loaded one after another, llama.cpp
            on every core whatever else runs;
  serial    this checkout with the old order: the same CLI code and output, but the model loaded first,
            then the embedder, then the chain (a child of this script that passes `backend=`);
  parallel  this checkout's `kb` command: the chat model and the embedder load on worker threads while the
            chain is imported and the question retrieved, the model reads the prompt's fixed start
            meanwhile (kb/answer/loading.py), and llama.cpp uses the cores other processes leave (llm/cpu.py).

Then the stages of each (`kb ask --json`; the serial child's own timers; the baseline fills fewer): imports
(process start to the question), loading the model and the embedder, retrieval (in `parallel` it includes
waiting for the loads), prefill, first token counted from the ask call. Last, the warm time to first
token: one process asking --warm different sample questions with everything loaded (llama.cpp keeps the
prompt's common start, as in `kb chat`). The embedder comes from the shared models folder
(KB_EMBEDDING__CACHE_DIR, else kb's default), so no run builds it. Figures are medians; ratios are against
the baseline of this run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_answer import QUESTIONS  # noqa: E402  (the same sample questions as the answer benchmark)

ROOT = Path(__file__).resolve().parents[2]
QUESTION = QUESTIONS[0]  # the README's: "How long are hourly snapshots kept?"
KB = "demo"
VARIANTS = ("baseline", "serial", "parallel")
STAGES = ("imports", "load_model", "load_embedder", "retrieve", "pack", "prefill", "first_token", "total")
# Run in a child with the old checkout: point the editable install's package map at it, then run `kb`.
SHIM = """import os, runpy, sys
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # a checkout in the working folder would win
finder = next(m for n, m in list(sys.modules.items()) if n.startswith("__editable__") and hasattr(m, "MAPPING"))
finder.MAPPING.update({k: v.replace(sys.argv[1], sys.argv[2], 1) for k, v in finder.MAPPING.items()})
sys.argv = sys.argv[3:]
if sys.argv[0].endswith(".py"):
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    from kb.cli import main
    main()
"""

def bench_env(home: Path) -> dict[str, str]:
    """kb's defaults in a fresh KB_HOME, with the shared models folder (no embedder build in any run)."""
    from kb.config import load_settings

    models = os.environ.get("KB_EMBEDDING__CACHE_DIR") or str(load_settings().models_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_") and k != "PYTHONUNBUFFERED"}
    env.update({"KB_HOME": str(home), "KB_CONFIG": str(home / "none.yaml"), "KB_EMBEDDING__CACHE_DIR": models})
    if os.environ.get("KB_ANSWER__MODE"):  # --answer-mode: how this checkout answers (a baseline ignores it)
        env["KB_ANSWER__MODE"] = os.environ["KB_ANSWER__MODE"]
    return env


def default_baseline() -> str:
    """The commit before kb/answer/loading.py was added (HEAD while it is not committed yet)."""
    added = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--", "kb/answer/loading.py"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return f"{added[-1]}~1" if added else "HEAD"


def export(rev: str, into: Path) -> Path:
    """The tree of `rev`, as files in `into` (git archive: no change to the repository)."""
    tar = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def kb_command() -> list[str]:
    script = Path(sys.executable).with_name("kb")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kb.cli"]


class Variants:
    def __init__(self, old: Path | None) -> None:
        self.old = old

    def names(self) -> tuple[str, ...]:
        return VARIANTS if self.old else VARIANTS[1:]

    def command(self, variant: str, *args: str) -> list[str]:
        if variant == "parallel":
            return [*kb_command(), "ask", QUESTION, "--kb", KB, *args]
        if variant == "serial":
            return [sys.executable, __file__, "--serial-child", *args]
        return [sys.executable, "-c", SHIM, str(ROOT), str(self.old), "kb", "ask", QUESTION, "--kb", KB, *args]

    def warm(self, variant: str, n: int) -> list[str]:
        if variant == "baseline":
            return [sys.executable, "-c", SHIM, str(ROOT), str(self.old), __file__, "--warm-child", str(n)]
        return [sys.executable, __file__, "--warm-child", str(n)]


def fresh(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """One fresh process: seconds from its spawn to its first stdout byte and to its exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(1)
    first = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {err.decode()}")
    return {"first_byte": first, "exit": time.perf_counter() - start}


def stages(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """One fresh `--json` process: the Answer's timings (plus imports where the command reports them)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return {k: v for k, v in json.loads(done.stdout)["timings"].items() if v is not None}


def serial_child(as_json: bool) -> None:
    """`kb ask` as kb ran it before the loads overlapped: model, embedder, chain, one after another."""
    from kb.cli.answer import _report, _run, since_process_start  # the command's own imports
    from kb.cli.options import AnswerOptions, open_kb, out

    imports = since_process_start()
    base = open_kb(KB, AnswerOptions().settings())
    call = time.perf_counter()
    backend = base.backend()
    load_model = time.perf_counter() - call
    base.embedder()
    load_embedder = time.perf_counter() - call - load_model
    import kb.answer.chain  # noqa: F401  (kb's old stream imported the chain inside the call too)

    before = time.perf_counter() - call  # what the old call spent before its chain started
    if not as_json:
        _report(_run(base.stream(QUESTION, backend=backend)), imports)
        return
    t = base.ask(QUESTION, backend=backend).timings
    out.print_json(data={"timings": {
        "imports": imports, "load_model": load_model, "load_embedder": load_embedder, "retrieve": t.retrieve,
        "pack": t.pack, "prefill": t.prefill, "total": t.total + before,
        "first_token": None if t.first_token is None else t.first_token + before}})


def warm_child(n: int) -> None:
    """First token of n different questions in one process, everything loaded (as in `kb chat`)."""
    from kb import KnowledgeBase

    with KnowledgeBase.open(KB, create=False) as base:
        base.ask(QUESTIONS[-1])  # load the models, jieba, the index
        rows = []
        for q in (QUESTIONS * n)[:n]:
            t = base.ask(q).timings
            rows.append({"first_token": t.first_token, "prefill": getattr(t, "prefill", None),
                         "retrieve": t.retrieve, "total": t.total})
    print(json.dumps(rows))


def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per variant (and as many --json)")
    parser.add_argument("--warm", type=int, default=6, help="warm questions in one process (0: skip)")
    parser.add_argument("--baseline", help="git revision to compare with (default: before kb/answer/loading.py); "
                        "'none' to skip")
    parser.add_argument("--answer-mode", choices=["auto", "generate", "extract"],
                        help="answer.mode for this checkout's runs (default: kb's default, auto, which quotes for "
                        "the embedded SmolLM2; generate measures the model writing)")
    parser.add_argument("--serial-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warm-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.answer_mode:
        os.environ["KB_ANSWER__MODE"] = args.answer_mode  # children inherit it through bench_env
    if args.serial_child:
        return serial_child(args.json)
    if args.warm_child:
        return warm_child(args.warm_child)

    work = Path(tempfile.mkdtemp(prefix="kb-bench-startup-"))
    try:
        env = bench_env(work / "home")
        rev = None if args.baseline == "none" else (args.baseline or default_baseline())
        variants = Variants(export(rev, work / "baseline") if rev else None)
        subprocess.run([*kb_command(), "ingest", str(ROOT / "docs" / "samples"), "--kb", KB, "-q"], env=env,
                       check=True, capture_output=True)
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {v: [] for v in variants.names()}
        timed: dict[str, list[dict]] = {v: [] for v in variants.names()}
        for i in range(args.runs):
            order = variants.names()[i % len(variants.names()):] + variants.names()[:i % len(variants.names())]
            for v in order:
                runs[v].append(fresh(variants.command(v), env))
            for v in order:
                timed[v].append(stages(variants.command(v, "--json"), env))
        warm = {}
        for v in ((("baseline",) if rev else ()) + ("parallel",)) if args.warm else ():
            done = subprocess.run(variants.warm(v, args.warm), env=env, capture_output=True, text=True, check=True)
            warm[v] = json.loads(done.stdout.strip().splitlines()[-1])
        report(args, rev, variants.names(), runs, timed, warm, load_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, rev, names, runs, timed, warm, load_before: float) -> None:
    print(f"kb ask {QUESTION!r} --kb {KB}: {args.runs} fresh processes per variant, {os.cpu_count()} CPUs, "
          f"load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; baseline {rev}")
    base = names[0]
    print(f"\nfresh process, seconds (median)  {''.join(f'{v:>10s}' for v in names)}   ratio to {base}")
    for key, label in (("first_byte", "to the first answer byte"), ("exit", "to exit")):
        values = [median(runs[v], key) for v in names]
        ratios = " ".join(f"{v / values[0]:.2f}" for v in values[1:])
        print(f"  {label:31s}{''.join(f'{fmt(v):>10s}' for v in values)}   {ratios}")
        for v in names:
            print(f"    {v:>9s}: {' '.join(fmt(r[key]) for r in runs[v])}")
    print(f"\nstages of a fresh `kb ask --json` {''.join(f'{v:>10s}' for v in names)}")
    for key in STAGES:
        print(f"  {key:31s}{''.join(f'{fmt(median(timed[v], key)):>10s}' for v in names)}")
    print("  (first_token and total count from the ask call; parallel's retrieve includes waiting for the loads;\n"
          "   '-': not reported by that variant)")
    for v, rows in warm.items():
        print(f"\nwarm {v}, {len(rows)} questions in one process: first token {fmt(median(rows, 'first_token'))} s "
              f"(each: {' '.join(fmt(r['first_token']) for r in rows)}), prefill {fmt(median(rows, 'prefill'))} s, "
              f"total {fmt(median(rows, 'total'))} s")


if __name__ == "__main__":
    main()
