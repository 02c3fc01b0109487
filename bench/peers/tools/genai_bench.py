"""genai-bench (`genai-bench benchmark ...`, Locust inside), read from its experiment JSON.

Its per-request metrics (`individual_request_metrics`) carry TTFT, TPOT, E2E, the server's prompt-token count
(on the fake server: the request id) and the error code, but no absolute times and no per-event times. A run is
bounded by a request count (its time bound is in whole minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.peers.common import MODEL_DIR, Aggregates, ClientRequest, ToolReport, WallToMono, Workload
from bench.peers.install import load_config
from bench.peers.tools.base import Capabilities, Command


class GenaiBench:
    name = "genai-bench"
    caps = Capabilities(
        per_event_times=False,
        bounded_by="requests",
        open_loop=False,
        note="TTFT/TPOT/E2E per request, no absolute or per-event times; chat endpoint only",
    )

    def command(self, w: Workload, url: str, out: Path) -> Command:
        exe = load_config().peers[self.name].executable
        argv = [
            str(exe), "benchmark", "--api-backend", "vllm", "--api-base", url, "--api-key", "none",
            "--task", "text-to-text", "--api-model-name", w.model, "--model-tokenizer", str(MODEL_DIR),
            "--num-concurrency", str(w.concurrency), "--spawn-rate", str(w.concurrency),
            "--traffic-scenario", f"D({w.prompt_tokens},{w.output_tokens})",
            "--max-time-per-run", "5", "--max-requests-per-run", str(w.requests),
            "--experiment-base-dir", str(out), "--experiment-folder-name", "experiment", "--server-engine", "vLLM",
        ]  # fmt: skip
        return Command(argv)  # its text-to-text task always speaks chat (/v1/chat/completions), whatever w.endpoint

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        files = sorted((out / "experiment").glob("D*_text-to-text_num_concurrency_*.json"))
        if files:
            return parse_experiment(json.loads(files[-1].read_text()))
        # When no request succeeded it stops with "No values found for metric 'ttft'" before writing the result,
        # but leaves the same per-request records in its debug file.
        debug = sorted((out / "experiment").glob("debug_for_run_*.json"))
        if not debug:
            raise FileNotFoundError(f"no genai-bench result JSON in {out / 'experiment'}")
        report = parse_experiment(json.loads(debug[-1].read_text()))
        report.aggregates.source = f"experiment/{debug[-1].name} (no result JSON: every request failed)"
        return report


def parse_experiment(data: dict) -> ToolReport:
    """One experiment JSON → per-request records (seconds → ms) and its aggregated metrics."""
    requests = []
    for m in data["individual_request_metrics"]:
        ok = m.get("error_code") in (None, 200)
        n_in = m.get("num_input_tokens")
        requests.append(
            ClientRequest(
                rid=int(n_in) if ok and n_in else None,
                ok=ok,
                error="" if ok else f"{m.get('error_code')}: {str(m.get('error_message') or '')[:120]}",
                ttft_ms=m["ttft"] * 1000.0 if m.get("ttft") is not None else None,
                tpot_ms=m["tpot"] * 1000.0 if m.get("tpot") is not None else None,
                itl_ms=m["tpot"] * 1000.0 if m.get("tpot") is not None else None,
                e2e_ms=m["e2e_latency"] * 1000.0 if m.get("e2e_latency") is not None else None,
                output_tokens=m.get("num_output_tokens"),
            )
        )
    agg_raw = data["aggregated_metrics"]
    stats = agg_raw.get("stats", {})

    def stat(name: str, key: str) -> float:
        try:
            return float(stats[name][key]) * 1000.0
        except (KeyError, TypeError):
            return float("nan")

    failed = sum(not r.ok for r in requests)
    agg = Aggregates(
        ttft_ms=stat("ttft", "mean"),
        ttft_median_ms=stat("ttft", "p50"),
        itl_ms=stat("tpot", "mean"),
        itl_median_ms=stat("tpot", "p50"),
        tpot_ms=stat("tpot", "mean"),
        tpot_median_ms=stat("tpot", "p50"),
        output_tokens_per_s=float(agg_raw.get("mean_output_throughput_tokens_per_s") or "nan"),
        output_tokens_mean=stat("num_output_tokens", "mean") / 1000.0,
        ok=len(requests) - failed,  # its per-request records hold the failures too (error_code, error_message)
        errors=failed,
        source="experiment/<scenario>.json: aggregated_metrics.stats",
    )
    return ToolReport(requests=requests, aggregates=agg, per_event=False)
