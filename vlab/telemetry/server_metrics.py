"""Sample vLLM's Prometheus `/metrics` during a run, in a separate process, into `RUN_DIR/server_metrics.csv`
(columns: `vlab.core.telemetry`).

`start_sampler(base_url, run_dir, interval_s, api_key)` is called by the Locust plugin at test start (on the master
or the only process) and returns at once: it starts `python -m vlab.telemetry.server_metrics sample ...` in its own
process group, so fetching and parsing `/metrics` never runs on the gevent hub that stamps the users' token times.
`.stop()` at test stop sends SIGTERM to that group; the sampler takes one last sample, writes its note and exits.

Files written in the run folder:

- `server_metrics.csv`: one row per sample (wide). `t_s` is the wall-clock Unix time (seconds) of the middle of the
  HTTP exchange; `scrape_ms` its wall time; `cpu_ms` the sampler's CPU time for that sample (fetch + parse + write).
  Then one column per canonical metric (`COLUMNS`), summed over label sets (model_name, engine; the KV usage
  fraction is averaged); an empty cell means the server does not export that metric. Gauges: `running`, `waiting`
  (requests), `kv_cache_usage` (fraction 0–1; vLLM's `..._perc` is a fraction). Counters (cumulative since server
  start): `preemptions`, `prefix_queries`, `prefix_hits` (tokens), `prompt_tokens`, `generation_tokens`.
  Histograms: `<name>_sum` (seconds) and `<name>_count` (observations) of `ttft`, `itl`, `e2e`, `queue_time`.
- `server_metrics.json`: `{"available": bool, "reason": ..., "cache_config": {labels of vllm:cache_config_info},
  "kv_capacity_tokens", "block_size", "num_blocks", "names": {canonical: exported name}, "samples", "errors",
  "cost": {...}}`. A server without `/metrics` gives `available: false` and a reason, no CSV, and no failure.

Names changed across vLLM versions; `ALIASES` maps each canonical metric to the names it has had (first found wins,
never summed across aliases). Lines of other metrics (and histogram buckets) are dropped before parsing (whole lines,
by name), then `prometheus_client.parser.text_string_to_metric_families` parses the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from prometheus_client.parser import text_string_to_metric_families

from vlab.client.http import parse_base_url
from vlab.core.runfolder import SERVER_METRICS_CSV as METRICS_CSV
from vlab.core.runfolder import SERVER_METRICS_JSON as METRICS_JSON
from vlab.core.runfolder import SERVER_METRICS_LOG as METRICS_LOG
from vlab.core.telemetry import SERVER_COLUMNS, SERVER_COUNTERS, SERVER_CSV_HEADER, SERVER_GAUGES, SERVER_HISTOGRAMS
from vlab.telemetry.process import SamplerProcess, sampling_cost, spawn_sampler, write_note

API_KEY_ENV = "VLAB_METRICS_API_KEY"
"""The API key reaches the sampler through this environment variable, never its command line."""

GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
"""Canonical gauge → exported sample names, newest first."""
COUNTERS: dict[str, tuple[str, ...]] = {
    "preemptions": ("vllm:num_preemptions_total",),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
}
"""Canonical counter → exported sample names (with `_total`), newest first."""
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "queue_time": ("vllm:request_queue_time_seconds",),
}
"""Canonical histogram → exported family names (samples `<name>_sum`, `<name>_count`), newest first."""
CACHE_CONFIG = "vllm:cache_config_info"
MEAN_OVER_LABELS: frozenset[str] = frozenset({"kv_cache_usage"})
"""Fractions are averaged over label sets (one KV cache per engine, equal sizes); everything else is summed."""
ALIASES: dict[str, tuple[str, ...]] = {**GAUGES, **COUNTERS, **HISTOGRAMS}

COLUMNS = SERVER_COLUMNS
CSV_HEADER = SERVER_CSV_HEADER
assert tuple(GAUGES) == SERVER_GAUGES and tuple(COUNTERS) == SERVER_COUNTERS and tuple(HISTOGRAMS) == SERVER_HISTOGRAMS

_WANTED_SAMPLES: frozenset[str] = frozenset(
    [n for names in (*GAUGES.values(), *COUNTERS.values()) for n in names]
    + [f"{n}{suffix}" for names in HISTOGRAMS.values() for n in names for suffix in ("_sum", "_count")]
    + [CACHE_CONFIG]
)
_WANTED_FAMILIES: frozenset[str] = frozenset(
    {n.removesuffix("_total") for names in COUNTERS.values() for n in names}
    | {n for names in COUNTERS.values() for n in names}
    | {n for names in (*GAUGES.values(), *HISTOGRAMS.values()) for n in names}
    | {CACHE_CONFIG}
)


# ------------------------------------------------------------------------------------------------------- parsing
def prefilter(text: str) -> str:
    """Keep only the lines of the metrics we read (their samples and `# TYPE`/`# HELP` lines); drop the rest whole.

    Histogram buckets and unrelated metrics are most of vLLM's /metrics text; dropping their lines by name (the
    token before `{` or the first space) cuts parse time several-fold. Values are still parsed by prometheus_client.
    """
    keep: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP") and parts[2] in _WANTED_FAMILIES:
                keep.append(line)
            continue
        end = len(line)
        for stop in ("{", " "):
            pos = line.find(stop)
            if 0 <= pos < end:
                end = pos
        if line[:end] in _WANTED_SAMPLES:
            keep.append(line)
    return "\n".join(keep) + "\n"


@dataclass
class Parsed:
    """One /metrics answer reduced to canonical numbers (summed over label sets) and the names they came from."""

    values: dict[str, float] = field(default_factory=dict)
    """Canonical column (`COLUMNS`) → value; absent when the server does not export it."""
    names: dict[str, str] = field(default_factory=dict)
    """Canonical metric → the exported name that was used (an alias for older vLLM versions)."""
    cache_config: dict[str, str] | None = None
    """Labels of `vllm:cache_config_info` (first label set), if exported."""

    @property
    def is_vllm(self) -> bool:
        return bool(self.values) or self.cache_config is not None


def parse_metrics(text: str) -> Parsed:
    """Parse Prometheus text into canonical values: sum over label sets of the first alias present per metric
    (mean for `MEAN_OVER_LABELS`)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    cache_config: dict[str, str] | None = None
    for family in text_string_to_metric_families(prefilter(text)):
        for sample in family.samples:
            if sample.name == CACHE_CONFIG:
                if cache_config is None:
                    cache_config = dict(sample.labels)
                continue
            if sample.name in _WANTED_SAMPLES and math.isfinite(sample.value):
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
                counts[sample.name] = counts.get(sample.name, 0) + 1
    out = Parsed(cache_config=cache_config)
    for canonical, names in (*GAUGES.items(), *COUNTERS.items()):
        for name in names:
            if name in sums:
                mean = canonical in MEAN_OVER_LABELS
                out.values[canonical] = sums[name] / counts[name] if mean else sums[name]
                out.names[canonical] = name
                break
    for canonical, names in HISTOGRAMS.items():
        for name in names:
            if f"{name}_count" in sums:
                out.values[f"{canonical}_sum"] = sums.get(f"{name}_sum", math.nan)
                out.values[f"{canonical}_count"] = sums[f"{name}_count"]
                out.names[canonical] = name
                break
    return out


def cache_summary(labels: dict[str, str] | None) -> dict[str, int | bool | None]:
    """Block size, number of KV blocks, KV capacity in tokens and prefix caching, from cache_config_info labels.

    Capacity = `kv_cache_size_tokens` when exported, else num_gpu_blocks (or num_cpu_blocks) × block_size.
    """
    labels = labels or {}

    def as_int(key: str) -> int | None:
        try:
            return int(float(labels[key]))
        except (KeyError, ValueError):
            return None

    block = as_int("block_size")
    blocks = as_int("num_gpu_blocks") or as_int("num_cpu_blocks")
    capacity = as_int("kv_cache_size_tokens") or (block * blocks if block and blocks else None)
    prefix = labels.get("enable_prefix_caching")
    return {
        "block_size": block,
        "num_blocks": blocks,
        "kv_capacity_tokens": capacity,
        "prefix_caching": None if prefix is None else prefix.lower() == "true",
    }


# ------------------------------------------------------------------------------------------------------ fetching
class Fetcher:
    """GET /metrics over one kept-alive HTTP connection (reconnects after an error). Returns (status, text)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        url = parse_base_url(base_url)
        self.https, self.host, self.port = url.tls, url.host, url.port
        self.path = url.prefix + "/metrics"
        self.headers = {"Accept": "text/plain", "Accept-Encoding": "identity"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> tuple[int, str]:
        for attempt in (0, 1):  # a kept-alive connection the server closed: retry once on a fresh one
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout_s)
            try:
                self.conn.request("GET", self.path, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, body.decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None


# ------------------------------------------------------------------------------------------------------ sampling
class _Stop(Exception):
    """Raised by the SIGTERM handler while the sampler sleeps between samples."""


@dataclass
class _State:
    stop: bool = False
    sleeping: bool = False


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.12g}"


def sample_loop(
    base_url: str,
    out_csv: Path,
    interval_s: float,
    api_key: str | None = None,
    *,
    max_samples: int | None = None,
    first_attempts: int = 4,
) -> int:
    """Sample until SIGTERM/SIGINT (or `max_samples`, or the parent exits); return the exit code (always 0).

    Ticks are scheduled at start + k·interval_s (a late sample skips the missed ticks rather than bunching). The
    first answer decides availability: a non-200 status, no vLLM metric in it, or no answer after `first_attempts`
    tries (0.5 s apart) writes `{"available": false, "reason": ...}` and exits. Later failures are counted, not fatal.
    """
    note_path = out_csv.with_name(METRICS_JSON)
    state = _State()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        state.stop = True
        if state.sleeping:
            raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    fetcher = Fetcher(base_url, api_key, timeout_s=max(2.0, 4 * interval_s))
    note: dict[str, object] = {"available": False, "url": base_url.rstrip("/") + "/metrics", "interval_s": interval_s}

    def sleep(seconds: float) -> None:
        if seconds <= 0 or state.stop:
            return
        state.sleeping = True
        try:
            time.sleep(seconds)
        except _Stop:
            pass
        finally:
            state.sleeping = False

    first: Parsed | None = None
    reason = ""
    for attempt in range(first_attempts):
        try:
            status, text = fetcher.get()
        except (OSError, http.client.HTTPException) as exc:
            reason = f"no answer from {note['url']}: {exc}"
        else:
            if status != 200:
                reason = f"GET {note['url']} answered HTTP {status}"
                break
            try:
                first = parse_metrics(text)
            except (ValueError, TypeError) as exc:
                reason = f"{note['url']} is not Prometheus text: {exc}"
                break
            if not first.is_vllm:
                reason = f"{note['url']} exports no vLLM metrics"
                first = None
            break
        if state.stop or attempt == first_attempts - 1:
            break
        sleep(0.5)
    if first is None:
        note["reason"] = reason or "stopped before the first sample"
        write_note(note_path, note)
        fetcher.close()
        return 0

    note.update(
        available=True,
        cache_config=first.cache_config,
        **cache_summary(first.cache_config),
        names=first.names,
        missing=[c for c in ALIASES if c not in first.names],
        started_at=time.time(),
    )
    write_note(note_path, note)
    samples = errors = 0
    last_error = ""
    cpu: list[float] = []
    wall: list[float] = []
    start = time.monotonic()
    tick = 0
    with out_csv.open("w", encoding="utf-8") as fh:
        fh.write(CSV_HEADER + "\n")
        fh.flush()
        final = False
        while True:
            c0, w0, t0 = time.process_time(), time.perf_counter(), time.time()
            try:
                status, text = fetcher.get()
                t1 = time.time()
                if status != 200:
                    raise ValueError(f"HTTP {status}")
                parsed = parse_metrics(text)
            except (OSError, http.client.HTTPException, ValueError, TypeError) as exc:
                errors += 1
                last_error = str(exc)[:200]
            else:
                scrape_ms = (time.perf_counter() - w0) * 1000.0
                cells = [_cell(parsed.values.get(c)) for c in COLUMNS]
                cpu_ms = (time.process_time() - c0) * 1000.0
                fh.write(f"{(t0 + t1) / 2:.6f},{scrape_ms:.3f},{cpu_ms:.3f},{','.join(cells)}\n")
                fh.flush()
                samples += 1
                cpu.append(cpu_ms)
                wall.append(scrape_ms)
            if final or (max_samples is not None and samples + errors >= max_samples):
                break
            if os.getppid() != parent:  # the load generator is gone: do not outlive it
                break
            tick = max(tick + 1, int((time.monotonic() - start) / interval_s) + 1)
            sleep(start + tick * interval_s - time.monotonic())
            if state.stop:
                final = True  # one last sample, so the deltas cover the run's very end
    fetcher.close()
    note.update(
        ended_at=time.time(), samples=samples, errors=errors, last_error=last_error, cost=sampling_cost(cpu, wall)
    )
    write_note(note_path, note)
    return 0


# ------------------------------------------------------------------------------------------ the Locust-side handle
def start_sampler(base_url: str, run_dir: Path, interval_s: float, api_key: str | None) -> SamplerProcess:
    """Start the /metrics sampler for `base_url` writing into `run_dir`; returns at once and never raises."""
    run_dir = Path(run_dir)
    env = dict(os.environ)
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key
    args = ["--url", base_url, "--out", str(run_dir / METRICS_CSV), "--interval", f"{interval_s:g}"]
    return spawn_sampler(
        "vlab.telemetry.server_metrics", args, run_dir, run_dir / METRICS_LOG, run_dir / METRICS_JSON, env
    )


# ------------------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlab.telemetry.server_metrics", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="sample /metrics into a CSV until SIGTERM")
    sample.add_argument("--url", required=True, help="server base URL (…/metrics is appended)")
    sample.add_argument("--out", type=Path, required=True, help="CSV path (the JSON note goes next to it)")
    sample.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    sample.add_argument("--max-samples", type=int, default=None, help="stop after this many (for measurements)")
    show = sub.add_parser("show", help="print the canonical values of one /metrics answer")
    show.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    api_key = os.environ.get(API_KEY_ENV) or None
    if args.command == "sample":
        return sample_loop(args.url, args.out, max(args.interval, 0.05), api_key, max_samples=args.max_samples)
    status, text = Fetcher(args.url, api_key, 5.0).get()
    parsed = parse_metrics(text) if status == 200 else Parsed()
    print(json.dumps({"status": status, "values": parsed.values, "names": parsed.names,
                      **cache_summary(parsed.cache_config)}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
