"""Running vLLM's own `vllm bench serve` from the server environment, for cross-checks against the suite.

It runs as `SERVER_PYTHON -m vllm.entrypoints.cli.main bench serve ...` (the server venv, or the GPU host's stand-in
venv), with a random dataset of fixed lengths, `--ignore-eos`, no warm-ups and a fresh seed per call: with one seed
every call (and its warm-ups) would replay the same prompts and hit the server's prefix cache. `--temperature` is
always sent (the suite's, 0 by default): since vLLM 0.2x, `vllm bench serve` leaves sampling to the server's defaults
(a model's generation_config: Qwen2's is temperature 0.7, top-p 0.8, top-k 20), a different and costlier request
than the suite's greedy one; on the H200 its first sampled batch stalled the server for seconds (TTFT p99 7.7 s at
64 concurrent against the suite's 0.23 s p50; docs/gpu.md).

Definitions (vLLM's, `vllm/benchmarks/serve.py`): TTFT from the send to the first chunk (role chunks included: the
suite's `first_chunk_ms`), TPOT = (E2E − TTFT) / (output tokens − 1), ITL per SSE event, output throughput = output
tokens of completed requests / the whole benchmark's wall time (ramp-up and drain included).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vlab.core.errors import UserError
from vlab.core.paths import SERVER_PYTHON

METRICS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "median_itl_ms",
           "output_throughput", "completed", "duration")  # fmt: skip


@dataclass(frozen=True)
class BenchRun:
    """One `vllm bench serve` call: its command line and the metrics of its result file."""

    command: list[str]
    result: dict[str, float]


def run_vllm_bench(
    host: str,
    model: str,
    tokenizer: str,
    *,
    concurrency: int,
    prompts: int,
    input_len: int,
    output_len: int,
    out: Path,
    seed: int,
    endpoint: str = "/v1/completions",
    temperature: float = 0.0,
    timeout_s: float = 900.0,
) -> BenchRun:
    """Run one `vllm bench serve` at `concurrency` with `prompts` requests; its JSON result goes to `out`."""
    cmd = [
        str(SERVER_PYTHON), "-m", "vllm.entrypoints.cli.main", "bench", "serve",
        "--backend", "vllm", "--base-url", host, "--endpoint", endpoint,
        "--model", model, "--tokenizer", tokenizer,
        "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--random-range-ratio", "0", "--ignore-eos", "--num-prompts", str(prompts),
        "--max-concurrency", str(concurrency), "--request-rate", "inf", "--num-warmups", "0", "--seed", str(seed),
        "--temperature", f"{temperature:g}", "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name, "--disable-tqdm",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"vllm bench serve did not finish within {timeout_s:g} s") from None
    (out.parent / f"{out.stem}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"vllm bench serve failed (exit {proc.returncode}): {tail[0]}")
    data = json.loads(out.read_text())
    return BenchRun(cmd, {k: float(data[k]) for k in METRICS if k in data})
