"""`vllm bench serve` from the server environment (.venv-server), read from its `--save-detailed` result JSON.

Per request it keeps `start_times` (perf_counter: CLOCK_MONOTONIC), `ttfts` and `itls` (one gap per content
chunk), `input_lens` (taken from the server's usage.prompt_tokens when sent: on the fake server, the request id)
and `output_lens`, so per-event ITL can be checked. A run is bounded by a prompt count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.peers.common import MODEL_DIR, Aggregates, ClientRequest, ToolReport, WallToMono, Workload
from bench.peers.install import load_config
from bench.peers.tools.base import Capabilities, Command


class VllmBench:
    name = "vllm-bench"
    caps = Capabilities(per_event_times=True, bounded_by="requests", open_loop=True)

    def command(self, w: Workload, url: str, out: Path) -> Command:
        exe = load_config().peers[self.name].executable
        argv = [
            str(exe), "bench", "serve", "--backend", "openai-chat" if w.endpoint == "chat" else "vllm",
            "--base-url", url, "--endpoint", w.path, "--model", w.model, "--tokenizer", str(MODEL_DIR),
            "--dataset-name", "random", "--random-input-len", str(w.prompt_tokens),
            "--random-output-len", str(w.output_tokens), "--random-range-ratio", "0",
            "--num-prompts", str(w.requests), "--max-concurrency", str(w.concurrency), "--request-rate", "inf",
            "--num-warmups", "0", "--seed", str(w.seed), "--save-result", "--save-detailed",
            "--result-dir", str(out), "--result-filename", "result.json", "--disable-tqdm",
        ]  # fmt: skip
        if w.ignore_eos:
            argv.append("--ignore-eos")
        return Command(argv)

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        return parse_result(json.loads((out / "result.json").read_text()))


def parse_result(data: dict) -> ToolReport:
    """The detailed result JSON → per-request records (token times rebuilt as TTFT + cumulative ITLs)."""
    requests = []
    n = len(data.get("ttfts") or [])
    for i in range(n):
        err = (data.get("errors") or [""] * n)[i]
        start = (data.get("start_times") or [None] * n)[i]
        ttft = data["ttfts"][i]
        itls = data["itls"][i] or []
        ok = not err and ttft is not None and ttft > 0
        t_ms: list[float] = []
        if ok:
            t = ttft * 1000.0
            t_ms.append(t)
            for gap in itls:
                t += gap * 1000.0
                t_ms.append(t)
        n_out = (data.get("output_lens") or [None] * n)[i]
        rid = (data.get("input_lens") or [None] * n)[i]
        latency = (data.get("latencies") or [None] * n)[i]
        requests.append(
            ClientRequest(
                rid=int(rid) if rid else None,
                ok=ok,
                error="" if ok else str(err)[:160],
                start_mono_s=start,
                ttft_ms=ttft * 1000.0 if ok else None,
                token_ms=t_ms if ok else None,
                first_token_mono_s=start + t_ms[0] / 1000.0 if ok and start is not None else None,
                last_token_mono_s=start + t_ms[-1] / 1000.0 if ok and start is not None else None,
                itl_ms=(t_ms[-1] - t_ms[0]) / (len(t_ms) - 1) if len(t_ms) > 1 else None,
                tpot_ms=(latency * 1000.0 - t_ms[0]) / (n_out - 1) if ok and latency and n_out and n_out > 1 else None,
                e2e_ms=latency * 1000.0 if latency else None,
                output_tokens=n_out,
            )
        )

    def get(key: str) -> float:
        v = data.get(key)
        return math.nan if v is None else float(v)

    agg = Aggregates(
        ttft_ms=get("mean_ttft_ms"),
        ttft_median_ms=get("median_ttft_ms"),
        itl_ms=get("mean_itl_ms"),
        itl_median_ms=get("median_itl_ms"),
        tpot_ms=get("mean_tpot_ms"),
        tpot_median_ms=get("median_tpot_ms"),
        output_tokens_per_s=get("output_throughput"),
        output_tokens_mean=get("total_output_tokens") / max(1.0, get("completed")),
        ok=int(get("completed")),
        errors=int(get("failed")) if not math.isnan(get("failed")) else 0,
        source="result.json: mean_*/median_* keys",
    )
    return ToolReport(requests=requests, aggregates=agg, per_event=True)
