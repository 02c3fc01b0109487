"""Cross-check the suite's metrics against vLLM's own `vllm bench serve` on the same workload and server.

Both tools send /v1/completions with 200-token prompts and exactly 128 output tokens (`ignore_eos`) at a fixed
concurrency, alternating A B A B ... on one local server (this shared machine drifts ±10–20% between runs, so the
comparison is between medians of interleaved rounds). Prints each metric side by side with the ratio of the
medians (suite / vllm bench). Target: mean TTFT, mean TPOT, mean ITL and output tokens/s within 10%.

    .venv/bin/python bench/crosscheck_vllm_bench.py [--rounds 2] [--concurrency 4] [--host URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from server.launcher import serving
from vlab.commands.runner import run_locust
from vlab.commands.vllm_bench import run_vllm_bench
from vlab.core.errors import UserError
from vlab.core.metrics import summarize, throughput
from vlab.core.paths import MODELS_DIR
from vlab.core.runfolder import LEVELS_CSV, REQUESTS_CSV, TOKENS_CSV
from vlab.core.scenario import load_scenario

METRICS = ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "output_throughput")


def bench_round(
    host: str, concurrency: int, prompts: int, input_len: int, output_len: int, out: Path, seed: int
) -> dict:
    """One `vllm bench serve` round (`vlab.commands.vllm_bench`: fresh seed, no warm-ups, the suite's temperature)."""
    try:
        run = run_vllm_bench(
            host, "smollm2", str(MODELS_DIR / "smollm2-135m-instruct"), concurrency=concurrency, prompts=prompts,
            input_len=input_len, output_len=output_len, out=out, seed=seed,
        )  # fmt: skip
    except UserError as exc:
        sys.exit(str(exc))
    return {k: run.result[k] for k in METRICS}


def run_suite(
    host: str,
    concurrency: int,
    duration_s: float,
    input_len: int,
    output_len: int,
    work: Path,
    metrics_interval_s: float = 0.0,
) -> dict:
    """One suite round. The server-metrics sampler is off by default here, as vllm bench does not scrape /metrics:
    on a 2-core CPU server each scrape takes the API server ~5 ms of CPU that prefill would otherwise use."""
    scenario_path = work / "crosscheck.yaml"
    scenario_path.write_text(
        f"name: crosscheck\napi: {{endpoint: completions, metrics_interval_s: {metrics_interval_s:g}}}\n"
        f"load: {{users: {concurrency}, duration: {duration_s}s, spawn_rate: 100}}\n"
        f"data: {{prompt_tokens: {input_len}, output_tokens: {output_len}, ignore_eos: true}}\n"
    )
    run_dir = work / "run"
    run_locust(load_scenario(scenario_path), scenario_path, run_dir, host=host)
    requests = pd.read_csv(run_dir / REQUESTS_CSV)
    ok = requests[requests.ok == 1]
    tokens = pd.read_csv(run_dir / TOKENS_CSV)
    tokens = tokens[tokens.request_id.isin(ok.request_id)].sort_values(["request_id", "i"])
    gaps = tokens.groupby("request_id").t_ms.diff().dropna().to_numpy()
    levels = pd.read_csv(run_dir / LEVELS_CSV)
    # Same accounting as vllm bench: tokens of completed requests over the span from first send to last finish.
    ends = (ok.t_start_s + ok.e2e_ms / 1000.0).to_numpy()
    window = (float(levels.start_s[0]), float(ends.max()))
    rate = throughput(ends, ok.completion_tokens.to_numpy(), ok.prompt_tokens.to_numpy(), window)
    return {
        "mean_ttft_ms": summarize(ok.ttft_ms).mean,
        "mean_tpot_ms": summarize(ok.tpot_ms).mean,
        "mean_itl_ms": summarize(gaps).mean,
        "output_throughput": rate.output_tokens_per_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="A running server (default: start cpu-smollm2 on a free port).")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (default 2: A B A B).")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=40, help="vllm bench prompts per round.")
    parser.add_argument("--input-len", type=int, default=200)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument(
        "--metrics-interval", type=float, default=0.0, help="The suite's /metrics sampling interval, s (0 = off)."
    )
    args = parser.parse_args()

    with serving(args.host) as host:
        results: dict[str, list[dict]] = {"vllm bench": [], "suite": []}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                vb = bench_round(
                    host,
                    args.concurrency,
                    args.prompts,
                    args.input_len,
                    args.output_len,
                    Path(tmp) / f"vb{r}.json",
                    seed=1000 + r + int(time.time()) % 100_000,
                )
                results["vllm bench"].append(vb)
                print(f"round {r + 1} vllm bench: {fmt(vb)}", flush=True)
                # The suite runs for as long as vllm bench took, so both see the same amount of work.
                duration = args.prompts * args.output_len / vb["output_throughput"]
                work = Path(tmp) / f"suite{r}"
                work.mkdir()
                suite = run_suite(
                    host,
                    args.concurrency,
                    round(duration),
                    args.input_len,
                    args.output_len,
                    work,
                    args.metrics_interval,
                )
                results["suite"].append(suite)
                print(f"round {r + 1} suite     : {fmt(suite)}", flush=True)
    print()
    print(f"| metric | vllm bench (median of {args.rounds}) | suite (median) | ratio suite/vllm |")
    print("|---|---|---|---|")
    worst = 0.0
    for key in METRICS:
        a = statistics.median(x[key] for x in results["vllm bench"])
        b = statistics.median(x[key] for x in results["suite"])
        ratio = b / a
        worst = max(worst, abs(ratio - 1))
        print(f"| {key} | {a:.2f} | {b:.2f} | {ratio:.3f} |")
    print(f"\nlargest deviation: {worst * 100:.1f}% (target ≤ 10%)")
    return 0 if worst <= 0.10 else 1


def fmt(values: dict) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in values.items())


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
