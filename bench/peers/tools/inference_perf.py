"""inference-perf (`inference-perf -c config.yml`), read from `per_request_lifecycle_metrics.json`.

Per request it keeps `start_time` and `output_token_times` (perf_counter: CLOCK_MONOTONIC; one stamp per
content-bearing SSE message, the role chunk excluded) and the server's `usage`, so per-event ITL can be checked.
Its `concurrent` load type is bounded by a request count. Its `random` data generator speaks completions only;
for chat it is given `shared_prefix` data (one group, prompts of the same length).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.peers.common import MODEL_DIR, ClientRequest, ToolReport, WallToMono, Workload
from bench.peers.install import load_config
from bench.peers.tools.base import Capabilities, Command, aggregates_from_requests


class InferencePerf:
    name = "inference-perf"
    caps = Capabilities(per_event_times=True, bounded_by="requests", open_loop=True)

    def command(self, w: Workload, url: str, out: Path) -> Command:
        n = w.output_tokens
        if w.endpoint == "chat":
            data = (
                "data:\n  type: shared_prefix\n  shared_prefix: {num_groups: 1, "
                f"num_prompts_per_group: {max(w.requests, 1)}, system_prompt_len: 1, "
                f"question_len: {w.prompt_tokens}, output_len: {n}, seed: {w.seed}}}\n"
            )
        else:
            p = w.prompt_tokens
            data = (
                "data:\n  type: random\n"
                f"  input_distribution: {{min: {p}, max: {p}, mean: {p}, std_dev: 0, total_count: {w.requests}}}\n"
                f"  output_distribution: {{min: {n}, max: {n}, mean: {n}, std_dev: 0, total_count: {w.requests}}}\n"
            )
        config = (
            f"api: {{type: {'chat' if w.endpoint == 'chat' else 'completion'}, streaming: true}}\n"
            + data
            + "load:\n  type: concurrent\n"
            f"  stages: [{{num_requests: {w.requests}, concurrency_level: {w.concurrency}}}]\n"
            f"  num_workers: 1\n  worker_max_concurrency: {w.concurrency}\n  base_seed: {w.seed}\n"
            f"  request_timeout: 120\n"
            f"server: {{type: vllm, model_name: {w.model}, base_url: '{url}', "
            f"ignore_eos: {str(w.ignore_eos).lower()}}}\n"
            f"tokenizer: {{pretrained_model_name_or_path: '{MODEL_DIR}'}}\n"
            "report:\n  request_lifecycle: {summary: true, per_stage: true, per_request: true}\n"
            f"storage: {{local_storage: {{path: '{out / 'reports'}'}}}}\n"
        )
        exe = load_config().peers[self.name].executable
        return Command([str(exe), "-c", str(out / "config.yml")], files={"config.yml": config})

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        per_request = json.loads((out / "reports" / "per_request_lifecycle_metrics.json").read_text())
        summary_path = out / "reports" / "summary_lifecycle_metrics.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        return parse_lifecycle(per_request, summary)


def parse_lifecycle(per_request: list[dict], summary: dict) -> ToolReport:
    """Per-request lifecycle records → records with every token event; aggregates from the summary's successes."""
    requests = []
    for r in per_request:
        info = r.get("info") or {}
        resp = info.get("response_metrics") or {}
        usage = resp.get("server_usage") or {}
        start = r.get("start_time")
        times = resp.get("output_token_times") or []
        ok = r.get("error") is None and bool(times)
        t_ms = [(t - start) * 1000.0 for t in times] if start is not None else None
        n_out = resp.get("output_tokens")
        rid = usage.get("prompt_tokens")
        requests.append(
            ClientRequest(
                rid=int(rid) if rid else None,
                ok=ok,
                error="" if ok else str(r.get("error") or "no token")[:160],
                start_mono_s=start,
                ttft_ms=t_ms[0] if t_ms else None,
                token_ms=t_ms,
                first_token_mono_s=times[0] if times else None,
                last_token_mono_s=times[-1] if times else None,
                itl_ms=(t_ms[-1] - t_ms[0]) / (len(t_ms) - 1) if t_ms and len(t_ms) > 1 else None,
                tpot_ms=((t_ms[-1] - t_ms[0]) / (n_out - 1)) if t_ms and n_out and n_out > 1 else None,
                e2e_ms=(r["end_time"] - start) * 1000.0 if start is not None and r.get("end_time") else None,
                output_tokens=n_out,
            )
        )
    agg = aggregates_from_requests(requests, "per_request_lifecycle_metrics.json (per-request means)")
    lat = (summary.get("successes") or {}).get("latency") or {}

    def stat(name: str, key: str) -> float | None:
        v = (lat.get(name) or {}).get(key)
        return None if v is None else float(v) * 1000.0

    if (v := stat("time_to_first_token", "mean")) is not None:
        agg.ttft_ms, agg.ttft_median_ms = v, stat("time_to_first_token", "median") or agg.ttft_median_ms
    if (v := stat("inter_token_latency", "mean")) is not None:
        agg.itl_ms, agg.itl_median_ms = v, stat("inter_token_latency", "median") or agg.itl_median_ms
    if (v := stat("time_per_output_token", "mean")) is not None:
        agg.tpot_ms, agg.tpot_median_ms = v, stat("time_per_output_token", "median") or agg.tpot_median_ms
    thr = (summary.get("successes") or {}).get("throughput") or {}
    if thr.get("output_tokens_per_sec") is not None:
        agg.output_tokens_per_s = float(thr["output_tokens_per_sec"])
    if summary:
        agg.source = "summary_lifecycle_metrics.json (successes.latency mean/median)"
        agg.errors = int((summary.get("failures") or {}).get("count") or agg.errors)
    return ToolReport(requests=requests, aggregates=agg, per_event=True)
