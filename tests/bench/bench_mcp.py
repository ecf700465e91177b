"""`kb mcp` against kb itself, in one run: search latency through a real MCP client (stdio subprocess) against
`KnowledgeBase.search` in this process, and `kb mcp`'s start-up to its first tool result against `kb search`'s
start-up to its printed result.

    python tests/bench/bench_mcp.py               # a temporary KB over docs/samples, 5 rounds of 10 queries
    python tests/bench/bench_mcp.py --rounds 10

Warm search: each query is searched in-process, then through MCP, alternately, so that machine noise falls on
both; each round changes the queries' text a little, so that both embed them (no query cache); medians and the ratio MCP / in-process are printed (the difference is the protocol: JSON-RPC over a pipe,
the tool's validation, the SDK's dispatch). Start-up: time from starting the child process to the first search
result, three times each, medians, `kb mcp` (spawn, initialize, list tools, search) against `kb search --json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from bench_answer import QUESTIONS  # the sample questions of the answer benchmark
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[2]
QUERIES = [*(QUESTIONS[i] for i in (0, 1, 4, 6, 7)), "一线城市出差住宿每晚最多报销多少？", "发生火情时应该怎么撤离？", "访客需要登记吗？",
           "每小时的快照保留多久？", "What should I do if there is a fire in the office?"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_HOME=str(home), KB_CONFIG=str(home / "none.yaml"))
    return env


def _params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "kb.cli", "mcp", "--kb", "bench"], env=env)


def warm_search(env: dict[str, str], rounds: int) -> tuple[list[float], list[float]]:
    from kb import KnowledgeBase

    local, remote = [], []

    async def main() -> None:
        with KnowledgeBase.open("bench", create=False) as kb:
            async with Client(_params(env)) as client:
                for q in QUERIES:  # warm both: embedder, caches
                    kb.search(q, 6)
                    await client.call_tool("search", {"query": q})
                for r in range(rounds):
                    for q in (f"{q} ({r})" for q in QUERIES):  # a new text each round: the query is embedded
                        t = time.perf_counter()
                        hits = kb.search(q, 6)
                        local.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        result = await client.call_tool("search", {"query": q})
                        remote.append(time.perf_counter() - t)
                        ids = [p["id"] for p in result.structured_content["passages"]]
                        assert ids == [f"bench:{h.chunk_id}" for h in hits], q

    anyio.run(main)
    return local, remote


def startup(env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning to the first search result: kb mcp (through its client), kb search."""
    async def first_result() -> float:
        t = time.perf_counter()
        async with Client(_params(env)) as client:
            await client.list_tools()
            result = await client.call_tool("search", {"query": QUERIES[0]})
            assert not result.is_error
            return time.perf_counter() - t

    mcp = anyio.run(first_result)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kb.cli", "search", QUERIES[0], "--kb", "bench", "--json"], env=env,
                   check=True, capture_output=True)
    return mcp, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 10 queries, warm")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kb-bench-mcp-"))
    env = _env(home)
    subprocess.run([sys.executable, "-m", "kb.cli", "ingest", str(ROOT / "docs" / "samples"), "--kb", "bench", "-q"],
                   env=env, check=True, capture_output=True)
    os.environ.update(env)
    load = os.getloadavg()[0]
    local, remote = warm_search(env, args.rounds)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    p95 = lambda xs: 1000 * sorted(xs)[int(0.95 * (len(xs) - 1))]  # noqa: E731
    print(f"machine load average at the start: {load:.2f} ({os.cpu_count()} cores)")
    print(f"warm search, {len(local)} queries (zh and en), same KB, same run:")
    print(f"  in-process KnowledgeBase.search  median {ms(local):7.1f} ms   p95 {p95(local):7.1f} ms")
    print(f"  MCP search over stdio            median {ms(remote):7.1f} ms   p95 {p95(remote):7.1f} ms")
    print(f"  ratio MCP / in-process (median)  {statistics.median(remote) / statistics.median(local):.2f}; "
          f"protocol overhead {ms(remote) - ms(local):.1f} ms")
    starts = [startup(env) for _ in range(3)]
    mcp_start = statistics.median(s[0] for s in starts)
    cli_start = statistics.median(s[1] for s in starts)
    print("start-up to the first search result (spawn to result, median of 3):")
    print(f"  kb mcp (initialize, list tools, search)  {mcp_start:6.2f} s")
    print(f"  kb search --json                         {cli_start:6.2f} s")
    print(f"  ratio kb mcp / kb search                 {mcp_start / cli_start:.2f}")


if __name__ == "__main__":
    main()
