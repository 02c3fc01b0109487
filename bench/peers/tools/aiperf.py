"""NVIDIA AIPerf (`aiperf profile ...`), read from its artifact folder.

`--export-level raw` makes it write `profile_export_raw.jsonl`: per request its `start_perf_ns` and every SSE
message with its own `perf_ns` (perf_counter_ns: CLOCK_MONOTONIC, the fake server's clock), so per-event ITL can be
checked. The aggregates come from `profile_export_aiperf.json`.

AIPerf 0.13.0 loads a tokenizer only by hub id when HF_HUB_OFFLINE=1 (a folder path fails with HFValidationError),
so it is given a hub cache that links to the local model folder (`common.ensure_hf_cache`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.peers.common import (
    HF_CACHE_REPO_ID,
    Aggregates,
    ClientRequest,
    ToolReport,
    WallToMono,
    Workload,
    ensure_hf_cache,
)
from bench.peers.install import load_config
from bench.peers.tools.base import Capabilities, Command, aggregates_from_requests, rid_from_response_id


class AIPerf:
    name = "aiperf"
    caps = Capabilities(per_event_times=True, bounded_by="time", open_loop=True)

    def command(self, w: Workload, url: str, out: Path) -> Command:
        cache = ensure_hf_cache()
        exe = load_config().peers[self.name].executable
        argv = [
            str(exe), "profile", "--model", w.model, "--url", url,
            "--endpoint-type", "chat" if w.endpoint == "chat" else "completions", "--streaming",
            "--tokenizer", HF_CACHE_REPO_ID, "--isl", str(w.prompt_tokens), "--isl-stddev", "0",
            "--osl", str(w.output_tokens), "--osl-stddev", "0",
            "--concurrency", str(w.concurrency), "--benchmark-duration", f"{w.duration_s:g}",
            "--benchmark-grace-period", "0", "--artifact-dir", str(out / "artifacts"),
            "--export-level", "raw", "--ui", "none", "--no-server-metrics", "--no-gpu-telemetry",
            "--use-server-token-count", "--random-seed", str(w.seed),
            "--num-dataset-entries", str(max(w.requests, 100)),
        ]  # fmt: skip
        if w.ignore_eos:
            argv += ["--extra-inputs", "ignore_eos:true"]
        return Command(argv, env={"HF_HUB_CACHE": str(cache)})

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        art = out / "artifacts"
        if not (art / "profile_export_raw.jsonl").exists() and (art / "profile_export.jsonl").exists():
            # When every request failed it exports neither the raw records nor the summary ("All N inference
            # request(s) failed"), only the per-record file, each record with its error.
            return parse_records(
                [json.loads(ln) for ln in (art / "profile_export.jsonl").read_text().splitlines() if ln]
            )
        raw = [json.loads(line) for line in (art / "profile_export_raw.jsonl").read_text().splitlines() if line]
        summary = json.loads((art / "profile_export_aiperf.json").read_text())
        return parse_artifacts(raw, summary)


def parse_records(records: list[dict]) -> ToolReport:
    """`profile_export.jsonl` alone (no raw export): per-record errors and metrics, no event times."""
    requests = []
    for rec in records:
        err = rec.get("error")
        metrics = rec.get("metrics") or {}

        def value(name: str, metrics: dict = metrics) -> float | None:
            entry = metrics.get(name)
            return float(entry["value"]) if isinstance(entry, dict) and entry.get("value") is not None else None

        n_in = value("usage_prompt_tokens")
        requests.append(
            ClientRequest(
                rid=int(n_in) if n_in else None,
                ok=not err,
                error=(err or {}).get("message", "")[:160] if isinstance(err, dict) else str(err or ""),
                ttft_ms=value("time_to_first_token"),
                itl_ms=value("inter_token_latency"),
                tpot_ms=value("inter_token_latency"),
                output_tokens=int(v) if (v := value("output_sequence_length")) else None,
            )
        )
    report = ToolReport(requests=requests, per_event=False)
    report.aggregates = aggregates_from_requests(requests, "artifacts/profile_export.jsonl (no summary written)")
    return report


def _token_event(data: dict) -> bool:
    """A message that carries generated text (the role-only chat chunk and the usage chunk do not)."""
    choices = data.get("choices") or []
    if not choices:
        return False
    c = choices[0]
    return bool(c.get("text") or (c.get("delta") or {}).get("content"))


def parse_artifacts(raw: list[dict], summary: dict) -> ToolReport:
    """Raw records (one per request) and the summary JSON → records with every token event, and the aggregates."""
    requests: list[ClientRequest] = []
    for rec in raw:
        start = rec.get("start_perf_ns")
        token_ns: list[int] = []
        rid = None
        first_choice_ns = None
        for resp in rec.get("responses") or []:
            for packet in resp.get("packets") or []:
                value = packet.get("value", "")
                if packet.get("name") != "data" or not value.startswith("{"):
                    continue
                data = json.loads(value)
                rid = rid or rid_from_response_id(data.get("id"))
                if data.get("choices") and first_choice_ns is None:
                    first_choice_ns = resp["perf_ns"]
                if _token_event(data):
                    token_ns.append(resp["perf_ns"])
        error = rec.get("error")
        status = rec.get("status")
        cancelled = bool((rec.get("metadata") or {}).get("was_cancelled"))
        ok = not error and status == 200 and bool(token_ns)
        t_ms = [(t - start) / 1e6 for t in token_ns] if start else None
        requests.append(
            ClientRequest(
                rid=rid,
                ok=ok,
                error="" if ok else f"status {status}: {str(error or '')[:120]}",
                cancelled=cancelled and not ok,
                start_mono_s=start / 1e9 if start else None,
                ttft_ms=(first_choice_ns - start) / 1e6 if first_choice_ns and start else None,
                token_ms=t_ms,
                first_token_mono_s=token_ns[0] / 1e9 if token_ns else None,
                last_token_mono_s=token_ns[-1] / 1e9 if token_ns else None,
                itl_ms=(t_ms[-1] - t_ms[0]) / (len(t_ms) - 1) if t_ms and len(t_ms) > 1 else None,
                e2e_ms=t_ms[-1] if t_ms else None,
                output_tokens=len(token_ns) or None,
            )
        )

    def stat(name: str, key: str = "avg") -> float:
        entry = summary.get(name)
        return float(entry[key]) if isinstance(entry, dict) and entry.get(key) is not None else math.nan

    errors = stat("error_request_count")
    agg = Aggregates(
        ttft_ms=stat("time_to_first_token"),
        ttft_median_ms=stat("time_to_first_token", "p50"),
        itl_ms=stat("inter_token_latency"),
        itl_median_ms=stat("inter_token_latency", "p50"),
        tpot_ms=stat("inter_token_latency"),  # AIPerf's ITL is (E2E − TTFT) / (OSL − 1): per token, i.e. a TPOT
        tpot_median_ms=stat("inter_token_latency", "p50"),
        output_tokens_per_s=stat("output_token_throughput"),
        output_tokens_mean=stat("output_sequence_length"),
        ok=int(stat("request_count")) if not math.isnan(stat("request_count")) else 0,
        errors=0 if math.isnan(errors) else int(errors),
        source="artifacts/profile_export_aiperf.json (avg, p50)",
    )
    return ToolReport(requests=requests, aggregates=agg, per_event=True)
