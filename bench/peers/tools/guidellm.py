"""GuideLLM (`guidellm run -c CONFIG.json`), read from the `benchmarks.json` it writes.

Per request GuideLLM keeps wall-clock times of the request start, the first and the last token iteration and the
count of iterations, not every event's time: per-event ITL cannot be checked, only its per-request mean. Its
request stats carry the response id (`cmpl-000000000042`), hence the fake server's request id.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.peers.common import MODEL_DIR, Aggregates, ClientRequest, ToolReport, WallToMono, Workload
from bench.peers.install import load_config
from bench.peers.tools.base import Capabilities, Command, rid_from_response_id


class GuideLLM:
    name = "guidellm"
    caps = Capabilities(
        per_event_times=False, bounded_by="time", open_loop=True, note="first/last token time per request only"
    )
    worker_processes = 1
    """GUIDELLM__MAX_WORKER_PROCESSES: the client cores the bench gives it."""

    def command(self, w: Workload, url: str, out: Path) -> Command:
        body: dict = {"ignore_eos": True} if w.ignore_eos else {}
        config = {
            "spec": {
                "backend": {"kind": "openai_http", "target": url, "model": w.model, "request_format": w.path,
                            "extras": {"body": body}, "timeout": 120},
                "profile": {"kind": "concurrent", "streams": [w.concurrency]},
                "tokenizer": {"kind": "huggingface_auto", "model": str(MODEL_DIR)},
                "data": [
                    {"kind": "synthetic_text", "prompt_tokens": w.prompt_tokens, "output_tokens": w.output_tokens}
                ],
                "seed": {"kind": "static", "value": w.seed},
                "constraints": [{"kind": "max_duration", "seconds": w.duration_s}],
                "outputs": [{"kind": "json", "path": str(out / "benchmarks.json")}],
                "metrics": {"kind": "generative", "sample_size": None},
            }
        }  # fmt: skip
        exe = load_config().peers[self.name].executable
        argv = [str(exe), "run", "-c", str(out / "guidellm.json"), "--disable-console-interactive"]
        # One worker process per client core (its default, 10 spawned processes that each import torch, started
        # no request within 150 s at 200 streams on one core); see docs/peers.md.
        env = {"GUIDELLM__MAX_WORKER_PROCESSES": str(self.worker_processes)}
        return Command(argv, env=env, files={"guidellm.json": json.dumps(config, indent=1)})

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        return parse_benchmarks(json.loads((out / "benchmarks.json").read_text()), clock)


def parse_benchmarks(data: dict, clock: WallToMono) -> ToolReport:
    """`benchmarks.json` (first benchmark) → per-request records and GuideLLM's own aggregates."""
    bench = data["benchmarks"][0]
    requests: list[ClientRequest] = []
    for status, items in bench["requests"].items():
        if status == "total":
            continue
        for item in items or []:
            timings = item["info"]["timings"]
            start = timings.get("request_start")
            first = timings.get("first_token_iteration")
            last = timings.get("last_token_iteration")
            err = item["info"].get("error")
            requests.append(
                ClientRequest(
                    rid=rid_from_response_id(item.get("response_id")),
                    ok=status == "successful",
                    error="" if status == "successful" else f"{status}: {str(err or '')[:120]}",
                    cancelled=status == "incomplete",
                    start_mono_s=clock(start) if start else None,
                    ttft_ms=item.get("time_to_first_token_ms"),
                    first_token_mono_s=clock(first) if first else None,
                    last_token_mono_s=clock(last) if last else None,
                    itl_ms=item.get("inter_token_latency_ms"),
                    tpot_ms=item.get("time_per_output_token_ms"),
                    e2e_ms=item["request_latency"] * 1000.0 if item.get("request_latency") is not None else None,
                    output_tokens=item.get("output_tokens"),
                )
            )
    metrics = bench["metrics"]

    def stat(name: str, key: str, group: str = "successful") -> float:
        try:
            return float(metrics[name][group][key])
        except (KeyError, TypeError, ValueError):
            return float("nan")

    agg = Aggregates(
        ttft_ms=stat("time_to_first_token_ms", "mean"),
        ttft_median_ms=stat("time_to_first_token_ms", "median"),
        itl_ms=stat("inter_token_latency_ms", "mean"),
        itl_median_ms=stat("inter_token_latency_ms", "median"),
        tpot_ms=stat("time_per_output_token_ms", "mean"),
        tpot_median_ms=stat("time_per_output_token_ms", "median"),
        output_tokens_per_s=stat("output_tokens_per_second", "mean", "total"),
        output_tokens_mean=stat("output_token_count", "mean"),
        ok=len(bench["requests"].get("successful") or []),
        errors=len(bench["requests"].get("errored") or []),  # "incomplete": cancelled at the run's end, not errors
        source="benchmarks.json: benchmarks[0].metrics (successful requests)",
    )
    return ToolReport(requests=requests, aggregates=agg, per_event=False)
