"""Streamed tokens/s of the suite with 1 and 2 Locust worker processes against the fast fake SSE server.

The fake server streams 256-token replies as fast as it can (bulk mode), so the client is the limit. On a 2-core
machine the server itself takes one core, so 2 workers share the other with it: the ratio shows what --processes
buys when cores are scarce, and the records show nothing was lost on the way to the master.

    .venv/bin/python bench/scaling_bench.py [--users 64] [--seconds 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from vlab.testing.fakeserver import fake_sse_server

REPO = Path(__file__).resolve().parent.parent


def run(url: str, processes: int, users: int, seconds: int, folder: Path) -> dict:
    scenario = folder / f"scaling-{processes}.yaml"
    scenario.write_text(
        f"name: scaling\napi: {{model: fake, metrics_interval_s: 0}}\nload: {{users: {users}, duration: {seconds}s}}\n"
        "data: {prompt_tokens: 16, output_tokens: 256}\n"
    )
    run_dir = folder / f"run-{processes}"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles" / "llm.py"), "--scenario", str(scenario),
           "--headless", "--host", url, "--run-dir", str(run_dir), "--only-summary"]  # fmt: skip
    if processes > 1:
        cmd += ["--processes", str(processes)]
    subprocess.run(cmd, capture_output=True, timeout=seconds + 120, cwd=REPO)
    requests = pd.read_csv(run_dir / "requests.csv")
    levels = pd.read_csv(run_dir / "levels.csv")
    window = float(levels.end_s.iloc[-1] - levels.start_s.iloc[0])
    ok = requests[requests.ok == 1]
    return {
        "processes": processes,
        "tokens_per_s": float(ok.n_events.sum()) / window,
        "requests": len(requests),
        "unique_ids": bool(requests.request_id.is_unique),
        "nodes": int(requests.node.nunique()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with fake_sse_server(folder, "--mode", "bulk", "--tokens", "256", "--no-events") as url:
            results = [run(url, n, args.users, args.seconds, folder) for n in (1, 2)]
    base = results[0]["tokens_per_s"]
    print("| worker processes | streamed tokens/s | ratio vs 1 | requests | ids unique | nodes |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['processes']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f} | {r['requests']} | "
              f"{r['unique_ids']} | {r['nodes']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
