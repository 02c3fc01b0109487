"""The gateway experiment, measured by the suite: what the gateway costs, and whether its limits keep a key fair.

    vlab gateway --experiment [--upstream http://127.0.0.1:8100 | --profile cpu-smollm2] [--rounds 1]
                                 [--parts passthrough,overhead,fairness] [--out DIR]

Three parts, each run with the suite's own CLI (`python -m vlab sweep SCENARIO --host URL --run-dir DIR
--no-report`), the gateway started as `python -m gateway` (its own process, so psutil can read its CPU time):

1. passthrough: the fake SSE server (20 ms per token, 64 tokens), 16 streams direct, then 16 through the gateway
   (`--pass-together`: at the same time). Every client gap (tokens.csv) is compared with the server's true send
   gap for the same request and pair of tokens (the fake server's `/events`, matched through
   `usage.prompt_tokens` = its request id): gap error = |client gap − send gap|, ms. Buffering would show as
   errors of a whole interval (20 ms). TTFT transit = the client's TTFT − the server's (arrival → first send).
2. overhead (paired, the default): at 1, 4, 16, 64 users (chat, 64-token prompts, exactly 32 output tokens) half
   the users go direct and half through the gateway at the same time (1 + 1 at the first level), so both paths
   share vLLM's batches and the shared machine's load; repeated `--rounds` times, medians reported. Over the
   requests both paths sent in their common window (after the warm-up): TTFT p50/p99 added (gateway − direct),
   ITL p50/p99 added (p99 of the inter-token gaps: the jitter), output tok/s per path lost, and the gateway's CPU
   per token (its process CPU time over the sweep ÷ token events it relayed), and its forward lag (client send →
   the gateway's upstream send, from its log; `forward_lag_ms`). `--sequential` runs all users
   direct, then all through the gateway instead, which also shows vLLM slowing down beside the gateway's CPU use,
   at the price of the machine's noise between the two runs (vLLM's own TTFT/ITL means are set beside them).
3. fairness: two keys through the gateway, `greedy` (open loop, 12 requests/s offered: more than the server can
   serve) and `polite` (2 users, closed loop): the polite key alone (its baseline), then with greedy unlimited,
   then with greedy limited to 2 requests/s. Does the polite key keep its SLO (TTFT ≤ 1 s, mean ITL ≤ 100 ms)?
   Greedy's 429s are counted from the records' `status` column (`error_kind` is `http` on this branch's suite,
   `rate_limited` on main since its core refactor; see docs/gateway.md).

On a shared server every sweep also counts the requests other clients finished meanwhile (vLLM's
`request_success_total` minus the sweep's own) and the load average, both in the tables.

Keys are made fresh for the run (`gateway.config.generate_key`), reach the suite through environment variables
only, and the gateway configs written here hold their hashes only; at the end every file in the folder is searched
for them (`keys_on_disk` in summary.json must be empty). Everything lands in `reports/<time>-gateway-experiment/`:
the run folders, gateway configs and JSON logs, `summary.json` and `summary.md` (the tables, also printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from gateway.config import generate_key, hash_key
from vlab.core.errors import UserError
from vlab.core.paths import REPO_ROOT, REPORTS_DIR

DEFAULT_UPSTREAM = "http://127.0.0.1:8100"
LEVELS: dict[int, tuple[float, float]] = {1: (45.0, 3.0), 4: (24.0, 3.0), 16: (24.0, 4.0), 64: (45.0, 12.0)}
"""Users → (stage duration, warm-up) seconds, picked for ≥ 30 measured requests per path and level on the 2-core
CPU server (at 64 users the first wave's TTFT is seconds: a longer warm-up keeps it out). Paired mode runs
max(1, users // 2) users on each path at once: 1 + 1, 2 + 2, 8 + 8, 32 + 32."""
PROMPT_TOKENS, OUTPUT_TOKENS = 64, 32
SLO = {"ttft_ms": 1000.0, "itl_ms": 100.0}
FAIR_DURATION_S, FAIR_WARMUP_S, POLITE_USERS = 60.0, 10.0, 2
GREEDY_RATE = 12.0
GREEDY_LIMITS = {"requests_per_s": 2, "burst_requests": 4, "tokens_per_min": 15000}
PASS_INTERVAL_MS, PASS_USERS, PASS_TOKENS, PASS_DURATION_S = 20.0, 16, 64, 15.0
PARTS = ("passthrough", "overhead", "fairness")
MAX_ATTEMPTS = 3
"""Overhead: a direct/gateway pair during which other clients used the shared vLLM is run again, up to this often
(the last attempt is kept whatever happened; its `foreign_requests` says so)."""


# ----------------------------------------------------------------------------------------------- processes
@dataclass
class GatewayProc:
    proc: subprocess.Popen[bytes]
    url: str
    ps: psutil.Process

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)


def write_gateway_config(path: Path, upstream: str, keys: dict[str, tuple[str, dict | None]], log: Path) -> None:
    """A gateway config holding only hashes: keys = id → (plain key, limits or None)."""
    lines = [f"upstream: {upstream}", "validation: {max_tokens: 512, max_prompt_tokens: 1800}", "keys:"]
    for kid, (key, limits) in keys.items():
        lines.append(f"  - id: {kid}")
        lines.append(f"    hash: {hash_key(key)}")
        if limits:
            lines.append(f"    limits: {json.dumps(limits)}")
    lines.append(f"log: {{path: {log}}}")
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def gateway_process(config: Path, upstream: str, folder: Path) -> Iterator[GatewayProc]:
    from vlab.client.http import find_free_port
    from vlab.commands.gateway import start_gateway, stop_process_group, wait_gateway_healthy

    port = find_free_port()
    proc = start_gateway(config, upstream, port, log_path=folder / f"{config.stem}.stderr")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_gateway_healthy(proc, url)
        yield GatewayProc(proc, url, psutil.Process(proc.pid))
    finally:
        stop_process_group(proc)


def write_scenario(path: Path, name: str, *, endpoint: str, stage: str, warmup_s: float, prompt: int, output: int,
                   key_env: str | None, spawn_rate: float = 64) -> Path:  # fmt: skip
    key = f", api_key_env: {key_env}" if key_env else ""
    path.write_text(
        f"name: {name}\n"
        f"api: {{endpoint: {endpoint}, metrics_interval_s: 0, read_timeout_s: 120{key}}}\n"
        f"load: {{stages: [{stage}], spawn_rate: {spawn_rate}, warmup_s: {warmup_s}}}\n"
        f"data: {{prompt_tokens: {prompt}, output_tokens: {output}, ignore_eos: true}}\n"
        f"slo: {{ttft_ms: {SLO['ttft_ms']:g}, itl_ms: {SLO['itl_ms']:g}}}\n"
    )
    return path


def sweep_cmd(scenario: Path, host: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vlab", "sweep", str(scenario), "--host", host, "--run-dir", str(run_dir),
            "--no-report"]  # fmt: skip


def run_sweeps(jobs: list[tuple[Path, str, Path, dict[str, str]]], log: Path) -> None:
    """Run `vlab sweep` for each (scenario, host, run_dir, env) at the same time; wait for all."""
    procs = []
    with open(log, "ab") as out:
        for scenario, host, run_dir, env in jobs:
            procs.append(
                subprocess.Popen(
                    sweep_cmd(scenario, host, run_dir),
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=out,
                    env={**os.environ, **env},
                    start_new_session=True,
                )
            )
        try:
            for p in procs:
                p.wait()
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, 15)
                    p.wait()
    for (_, _, run_dir, _), p in zip(jobs, procs, strict=True):
        if not (run_dir / "requests.csv").exists():
            raise UserError(f"sweep into {run_dir} recorded nothing (exit {p.returncode}); see {log}")


_VLLM_COUNTERS = {
    "finished": "vllm:request_success_total",
    "ttft_sum": "vllm:time_to_first_token_seconds_sum",
    "ttft_count": "vllm:time_to_first_token_seconds_count",
    "itl_sum": "vllm:inter_token_latency_seconds_sum",
    "itl_count": "vllm:inter_token_latency_seconds_count",
}


def vllm_counters(upstream: str) -> dict[str, float]:
    """vLLM's cumulative counters (summed over label sets; NaN when unavailable): finished requests, and the sums
    and counts of its own TTFT and inter-token latency histograms (seconds)."""
    import urllib.request

    out = dict.fromkeys(_VLLM_COUNTERS, math.nan)
    try:
        with urllib.request.urlopen(f"{upstream}/metrics", timeout=5) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return out
    by_name = {name: key for key, name in _VLLM_COUNTERS.items()}
    for key in out:
        out[key] = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in by_name:
            out[by_name[name]] += float(line.rsplit(" ", 1)[1])
    return out


def server_side(before: dict[str, float], after: dict[str, float], ours_finished: int) -> dict[str, float]:
    """Over one sweep: requests other clients finished on a shared server (vLLM's count minus the sweep's own
    completed requests), and vLLM's own mean TTFT and inter-token latency, ms (over all its requests then)."""
    d = {k: after[k] - before[k] for k in before}
    return {
        "foreign_requests": d["finished"] - ours_finished,
        "server_ttft_mean_ms": d["ttft_sum"] / d["ttft_count"] * 1000 if d["ttft_count"] else math.nan,
        "server_itl_mean_ms": d["itl_sum"] / d["itl_count"] * 1000 if d["itl_count"] else math.nan,
        "load_average": os.getloadavg()[0],
    }


# ------------------------------------------------------------------------------------------------ analysis
@dataclass
class Run:
    requests: pd.DataFrame
    tokens: pd.DataFrame
    start_s: float
    end_s: float
    warmup_s: float
    override: tuple[float, float] | None = None
    """A window set from outside (runs that ran at the same time share one)."""

    @classmethod
    def load(cls, run_dir: Path, warmup_s: float) -> Run:
        req = pd.read_csv(run_dir / "requests.csv", keep_default_na=False, na_values=[""])
        tok = pd.read_csv(run_dir / "tokens.csv")
        levels = pd.read_csv(run_dir / "levels.csv")
        start = float(levels.start_s.min())
        end = float(levels.end_s.max()) if levels.end_s.notna().all() else float(req.t_start_s.max())
        return cls(req, tok, start, end, warmup_s)

    @property
    def window(self) -> tuple[float, float]:
        return self.override or (self.start_s + self.warmup_s, self.end_s)

    def measured(self) -> pd.DataFrame:
        """Requests sent inside the window that are not cut off by the run's end."""
        lo, hi = self.window
        r = self.requests
        return r[(r.t_start_s >= lo) & (r.t_start_s <= hi) & (r.error_kind != "cut_off")]

    def gaps_ms(self, ids: pd.Series) -> np.ndarray:
        t = self.tokens[self.tokens.request_id.isin(set(ids))].sort_values(["request_id", "i"])
        gaps = t.groupby("request_id").t_ms.diff().dropna()
        return gaps.to_numpy()

    def output_tok_per_s(self) -> float:
        """Token events arriving inside the window ÷ the window's length."""
        lo, hi = self.window
        starts = self.requests.set_index("request_id").t_start_s
        arrivals = self.tokens.request_id.map(starts) + self.tokens.t_ms / 1000.0
        return float(((arrivals >= lo) & (arrivals <= hi)).sum()) / (hi - lo)


def _pct(values: Any, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.percentile(arr, q)) if arr.size else math.nan


def level_numbers(run: Run) -> dict[str, float]:
    m = run.measured()
    ok = m[m.ok == 1]
    gaps = run.gaps_ms(ok.request_id)
    meets = (ok.ttft_ms <= SLO["ttft_ms"]) & (ok.itl_mean_ms <= SLO["itl_ms"])
    return {
        "n_measured": len(ok),
        "n_failed": int((m.ok == 0).sum()),
        "ttft_p50_ms": _pct(ok.ttft_ms, 50),
        "ttft_p99_ms": _pct(ok.ttft_ms, 99),
        "itl_p50_ms": _pct(gaps, 50),
        "itl_p99_ms": _pct(gaps, 99),
        "output_tok_per_s": run.output_tok_per_s(),
        "slo_fraction": float(meets.mean()) if len(ok) else math.nan,
        # over every completed request of the run, to set beside vLLM's own means over the same time
        "ttft_mean_all_ms": float(run.requests[run.requests.ok == 1].ttft_ms.mean()),
        "itl_mean_all_ms": float(np.mean(run.gaps_ms(run.requests[run.requests.ok == 1].request_id))),
    }


# --------------------------------------------------------------------------------------------------- parts
def part_passthrough(folder: Path, keys: dict[str, str], together: bool = False) -> dict[str, Any]:
    """The fake SSE server, direct then through the gateway (`together`: both at once, sharing the machine's load):
    gap error against the server's true send gaps, and TTFT transit against its arrival and first-send stamps."""
    import urllib.request

    from vlab.testing.fakeserver import fake_sse_server

    out: dict[str, Any] = {}
    part = folder / "passthrough"
    part.mkdir()
    key_env = "VLAB_GW_KEY_PASS"
    stage = f"{{users: {PASS_USERS}, duration: {PASS_DURATION_S:g}s}}"
    scenarios = {
        path: write_scenario(
            part / f"{path}.yaml",
            f"gw-pass-{path}",
            endpoint="completions",
            stage=stage,
            warmup_s=3,
            prompt=16,
            output=PASS_TOKENS,
            key_env=key_env if path == "gateway" else None,
        )
        for path in ("direct", "gateway")
    }
    with fake_sse_server(part, "--interval-ms", f"{PASS_INTERVAL_MS:g}") as fake_url:
        config = part / "gateway-pass.yaml"
        write_gateway_config(config, fake_url, {"pass": (keys["pass"], None)}, part / "gateway-pass.jsonl")
        with gateway_process(config, fake_url, part) as gw:
            if together:
                jobs = [(scenarios["direct"], fake_url, part / "direct", {}),
                        (scenarios["gateway"], gw.url, part / "gateway", {key_env: keys["pass"]})]  # fmt: skip
            else:  # each path is compared with the server's own stamps: no need to share the time
                run_sweeps([(scenarios["direct"], fake_url, part / "direct", {})], part / "sweeps.log")
                jobs = [(scenarios["gateway"], gw.url, part / "gateway", {key_env: keys["pass"]})]
            c0 = gw.cpu_s()
            run_sweeps(jobs, part / "sweeps.log")
            cpu = gw.cpu_s() - c0
        with urllib.request.urlopen(fake_url + "/events", timeout=30) as resp:
            log = json.load(resp)["requests"]
    (part / "server-events.json").write_text(json.dumps(log))
    sent = {r["rid"]: r["token_ns"] for r in log}
    arrived = {r["rid"]: r["arrival_ns"] for r in log}
    runs = {path: Run.load(part / path, 3.0) for path in ("direct", "gateway")}
    window = overlap(runs.values()) if together else None
    for path, run in runs.items():
        run.override = window
        errors, transit = [], []
        for row in run.measured().itertuples():
            if row.ok != 1 or row.prompt_tokens not in sent:
                continue
            client = run.tokens[run.tokens.request_id == row.request_id].sort_values("i").t_ms.to_numpy()
            server = np.asarray(sent[row.prompt_tokens], dtype=np.int64)
            if len(client) != len(server):
                continue
            errors.append(np.diff(client) - np.diff(server) / 1e6)
            # client TTFT − the server's (request arrival → first token sent): the request's and the first
            # token's transit, i.e. what lies between client and server (the gateway, on that path)
            transit.append(row.ttft_ms - (server[0] - arrived[row.prompt_tokens]) / 1e6)
        err = np.abs(np.concatenate(errors)) if errors else np.array([])
        events = int(run.requests.n_events.sum())
        out[path] = {
            "requests_matched": len(errors),
            "gaps": int(err.size),
            "gap_error_abs_p50_ms": _pct(err, 50),
            "gap_error_abs_p99_ms": _pct(err, 99),
            "gap_error_abs_p999_ms": _pct(err, 99.9),
            "gap_error_abs_max_ms": float(err.max()) if err.size else math.nan,
            "gaps_over_half_interval": int((err >= PASS_INTERVAL_MS / 2).sum()),
            "ttft_transit_p50_ms": _pct(transit, 50),
            "ttft_transit_p99_ms": _pct(transit, 99),
            "gateway_cpu_us_per_event": cpu / events * 1e6 if path == "gateway" and events else math.nan,
        }
    d, g = out["direct"], out["gateway"]
    out["added_p50_ms"] = g["gap_error_abs_p50_ms"] - d["gap_error_abs_p50_ms"]
    out["added_p99_ms"] = g["gap_error_abs_p99_ms"] - d["gap_error_abs_p99_ms"]
    out["within_1ms"] = bool(out["added_p99_ms"] <= 1.0)
    out["ttft_added_p50_ms"] = g["ttft_transit_p50_ms"] - d["ttft_transit_p50_ms"]
    out["ttft_added_p99_ms"] = g["ttft_transit_p99_ms"] - d["ttft_transit_p99_ms"]
    out["together"] = together
    return out


def overlap(runs: Any) -> tuple[float, float]:
    """The measured window common to runs that ran at the same time: latest start + warm-up to earliest end."""
    runs = list(runs)
    return max(r.start_s + r.warmup_s for r in runs), min(r.end_s for r in runs)


def part_paired(folder: Path, upstream: str, keys: dict[str, str], rounds: int, levels: list[int]) -> dict:
    """Overhead, paired: at each level half the users go direct and half through the gateway, at the same time, so
    both paths share vLLM's batches and the machine's load; the differences are the relay's."""
    part = folder / "overhead"
    part.mkdir()
    key_env = "VLAB_GW_KEY_OVERHEAD"
    config = part / "gateway-overhead.yaml"
    write_gateway_config(config, upstream, {"bench": (keys["bench"], None)}, part / "gateway-overhead.jsonl")
    results: dict[int, list[dict]] = {u: [] for u in levels}
    with gateway_process(config, upstream, part) as gw:
        for rnd in range(rounds):
            for total in levels:
                per_path = max(1, total // 2)
                duration, warmup = LEVELS[total]
                jobs, dirs = [], {}
                for path in ("direct", "gateway"):
                    name = f"gw-paired-{total}u-{path}-r{rnd + 1}"
                    scenario = write_scenario(part / f"{name}.yaml", name, endpoint="chat",
                                              stage=f"{{users: {per_path}, duration: {duration:g}s}}",
                                              warmup_s=warmup, prompt=PROMPT_TOKENS, output=OUTPUT_TOKENS,
                                              key_env=key_env if path == "gateway" else None)  # fmt: skip
                    host, env = (gw.url, {key_env: keys["bench"]}) if path == "gateway" else (upstream, {})
                    dirs[path] = part / name
                    jobs.append((scenario, host, dirs[path], env))
                c0, w0, v0 = gw.cpu_s(), time.monotonic(), vllm_counters(upstream)
                run_sweeps(jobs, part / "sweeps.log")
                cpu, wall = gw.cpu_s() - c0, time.monotonic() - w0
                runs = {path: Run.load(d, warmup) for path, d in dirs.items()}
                window = overlap(runs.values())
                row: dict[str, Any] = {}
                for path, run in runs.items():
                    run.override = window
                    row[path] = level_numbers(run)
                ours = sum(int((r.requests.ok == 1).sum()) for r in runs.values())
                row["server"] = server_side(v0, vllm_counters(upstream), ours)
                events = int(runs["gateway"].requests.n_events.sum())
                row["gateway_cpu_ms_per_token"] = cpu / events * 1000 if events else math.nan
                lag = forward_lag_ms(part / "gateway-overhead.jsonl", runs["gateway"])
                row["forward_lag_p50_ms"], row["forward_lag_p99_ms"] = _pct(lag, 50), _pct(lag, 99)
                row["gateway_cpu_core_fraction"] = cpu / wall
                d, g = row["direct"], row["gateway"]
                print(f"[overhead] {per_path} + {per_path} users, round {rnd + 1}: TTFT p50 {d['ttft_p50_ms']:.0f} → "
                      f"{g['ttft_p50_ms']:.0f} ms, {d['output_tok_per_s']:.0f} → {g['output_tok_per_s']:.0f} tok/s, "
                      f"other clients' requests {row['server']['foreign_requests']:.0f}", flush=True)  # fmt: skip
                results[total].append(row)
    table = []
    for total in levels:
        rows = results[total]
        d = _median_dicts([r["direct"] for r in rows])
        g = _median_dicts([r["gateway"] for r in rows])
        table.append({
            "users": total, "users_per_path": max(1, total // 2), "direct": d, "gateway": g,
            "ttft_p50_added_ms": _median([r["gateway"]["ttft_p50_ms"] - r["direct"]["ttft_p50_ms"] for r in rows]),
            "ttft_p99_added_ms": _median([r["gateway"]["ttft_p99_ms"] - r["direct"]["ttft_p99_ms"] for r in rows]),
            "itl_p50_added_ms": _median([r["gateway"]["itl_p50_ms"] - r["direct"]["itl_p50_ms"] for r in rows]),
            "itl_p99_added_ms": _median([r["gateway"]["itl_p99_ms"] - r["direct"]["itl_p99_ms"] for r in rows]),
            "tok_s_lost_fraction": _median([
                (r["direct"]["output_tok_per_s"] - r["gateway"]["output_tok_per_s"]) / r["direct"]["output_tok_per_s"]
                for r in rows
            ]),
            "gateway_cpu_ms_per_token": _median([r["gateway_cpu_ms_per_token"] for r in rows]),
            "gateway_cpu_core_fraction": _median([r["gateway_cpu_core_fraction"] for r in rows]),
            "forward_lag_p50_ms": _median([r["forward_lag_p50_ms"] for r in rows]),
            "forward_lag_p99_ms": _median([r["forward_lag_p99_ms"] for r in rows]),
            "foreign_requests": [r["server"]["foreign_requests"] for r in rows],
            "load_average": [r["server"]["load_average"] for r in rows],
        })  # fmt: skip
    admit = _gateway_log_ms(part / "gateway-overhead.jsonl", "admit_ms")
    return {"mode": "paired", "rounds": rounds, "levels": table, "gateway_admit_ms_p50": _pct(admit, 50),
            "gateway_admit_ms_p99": _pct(admit, 99), "raw": results}  # fmt: skip


def forward_lag_ms(gateway_log: Path, run: Run) -> np.ndarray:
    """Per request of `run` (the gateway path): client send → the gateway's upstream send, ms.

    The gateway's upstream send is its log line's `ts − duration_ms + admit_ms`; both clocks are this machine's
    wall clock. Requests are paired in order (the k-th client send with the k-th upstream send inside the run's
    span): the gateway forwards in arrival order, so this is exact up to reordering within a burst."""
    sent = []
    for line in gateway_log.read_text().splitlines():
        rec = json.loads(line)
        if (
            rec.get("event") == "request"
            and rec.get("status") == 200
            and rec.get("path") in ("/v1/chat/completions", "/v1/completions")
        ):
            sent.append(rec["ts"] - rec["duration_ms"] / 1000 + rec["admit_ms"] / 1000)
    ok = run.requests[run.requests.ok == 1]
    if ok.empty:
        return np.array([])
    lo, hi = float(ok.t_start_s.min()) - 0.5, float(ok.t_start_s.max()) + 0.5
    upstream = np.sort([t for t in sent if lo <= t <= hi])
    client = np.sort(ok.t_start_s.to_numpy())
    n = min(len(client), len(upstream))
    return (upstream[:n] - client[:n]) * 1000.0


def _median(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmedian(arr)) if np.isfinite(arr).any() else math.nan


def part_overhead(folder: Path, upstream: str, keys: dict[str, str], rounds: int, levels: list[int]) -> dict:
    part = folder / "overhead"
    part.mkdir()
    key_env = "VLAB_GW_KEY_OVERHEAD"
    config = part / "gateway-overhead.yaml"
    write_gateway_config(config, upstream, {"bench": (keys["bench"], None)}, part / "gateway-overhead.jsonl")
    results: dict[int, dict[str, list[dict]]] = {u: {"direct": [], "gateway": []} for u in levels}
    discarded: dict[int, int] = dict.fromkeys(levels, 0)
    with gateway_process(config, upstream, part) as gw:

        def sweep(users: int, path: str, name: str) -> dict[str, float]:
            duration, warmup = LEVELS[users]
            scenario = write_scenario(part / f"{name}.yaml", name, endpoint="chat",
                                      stage=f"{{users: {users}, duration: {duration:g}s}}", warmup_s=warmup,
                                      prompt=PROMPT_TOKENS, output=OUTPUT_TOKENS,
                                      key_env=key_env if path == "gateway" else None)  # fmt: skip
            run_dir = part / name
            host, env = (gw.url, {key_env: keys["bench"]}) if path == "gateway" else (upstream, {})
            c0, w0, v0 = gw.cpu_s(), time.monotonic(), vllm_counters(upstream)
            run_sweeps([(scenario, host, run_dir, env)], part / "sweeps.log")
            cpu, wall = gw.cpu_s() - c0, time.monotonic() - w0
            run = Run.load(run_dir, warmup)
            nums = level_numbers(run)
            nums.update(server_side(v0, vllm_counters(upstream), int((run.requests.ok == 1).sum())))
            if path == "gateway":
                events = int(run.requests.n_events.sum())
                nums["gateway_cpu_ms_per_token"] = cpu / events * 1000 if events else math.nan
                nums["gateway_cpu_core_fraction"] = cpu / wall
            print(f"[overhead] {users:>2} users, {path:<7} {name}: {nums['output_tok_per_s']:.0f} tok/s, "
                  f"other clients' requests {nums['foreign_requests']:.0f}", flush=True)  # fmt: skip
            return nums

        for rnd in range(rounds):
            for users in levels:
                order = ("direct", "gateway") if rnd % 2 == 0 else ("gateway", "direct")
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    pair = {path: sweep(users, path, f"gw-overhead-{users}u-{path}-r{rnd + 1}-a{attempt}")
                            for path in order}  # fmt: skip
                    if all(not pair[p]["foreign_requests"] > 0 for p in order) or attempt == MAX_ATTEMPTS:
                        break
                    discarded[users] += 1  # another client used the shared server meanwhile: run the pair again
                for path in order:
                    results[users][path].append(pair[path])
    table = []
    for users in levels:
        d = _median_dicts(results[users]["direct"])
        g = _median_dicts(results[users]["gateway"])
        table.append({
            "users": users, "direct": d, "gateway": g,
            "ttft_p50_added_ms": g["ttft_p50_ms"] - d["ttft_p50_ms"],
            "ttft_p99_added_ms": g["ttft_p99_ms"] - d["ttft_p99_ms"],
            "itl_p99_added_ms": g["itl_p99_ms"] - d["itl_p99_ms"],
            "tok_s_lost_fraction": (d["output_tok_per_s"] - g["output_tok_per_s"]) / d["output_tok_per_s"],
            "gateway_cpu_ms_per_token": g.get("gateway_cpu_ms_per_token", math.nan),
            "gateway_cpu_core_fraction": g.get("gateway_cpu_core_fraction", math.nan),
            "foreign_requests": [r.get("foreign_requests") for p in ("direct", "gateway") for r in results[users][p]],
            "server_itl_added_ms": g["server_itl_mean_ms"] - d["server_itl_mean_ms"],
            "server_ttft_added_ms": g["server_ttft_mean_ms"] - d["server_ttft_mean_ms"],
            # client mean TTFT minus vLLM's own: network, HTTP and client time, plus the gateway's relay on that path
            "relay_ttft_added_ms": (g["ttft_mean_all_ms"] - g["server_ttft_mean_ms"])
            - (d["ttft_mean_all_ms"] - d["server_ttft_mean_ms"]),
            "relay_itl_added_ms": (g["itl_mean_all_ms"] - g["server_itl_mean_ms"])
            - (d["itl_mean_all_ms"] - d["server_itl_mean_ms"]),
        })  # fmt: skip
    admit = _gateway_log_ms(part / "gateway-overhead.jsonl", "admit_ms")
    return {"mode": "sequential", "rounds": rounds, "levels": table, "pairs_discarded": discarded,
            "gateway_admit_ms_p50": _pct(admit, 50), "gateway_admit_ms_p99": _pct(admit, 99),
            "raw": results}  # fmt: skip


FAIR_PHASES: tuple[tuple[str, dict | None, bool], ...] = (
    ("polite-alone", None, False),
    ("greedy-unlimited", None, True),
    ("greedy-limited", GREEDY_LIMITS, True),
)
"""(phase, greedy's limits, greedy sends): the polite key alone is the baseline its SLO is judged against."""


def part_fairness(folder: Path, upstream: str, keys: dict[str, str]) -> dict[str, Any]:
    part = folder / "fairness"
    part.mkdir()
    out: dict[str, Any] = {}
    env = {"VLAB_GW_KEY_POLITE": keys["polite"], "VLAB_GW_KEY_GREEDY": keys["greedy"]}
    for phase, greedy_limits, greedy_sends in FAIR_PHASES:
        config = part / f"gateway-{phase}.yaml"
        log = part / f"gateway-{phase}.jsonl"
        write_gateway_config(config, upstream, {"polite": (keys["polite"], None), "greedy": (keys["greedy"],
                             greedy_limits)}, log)  # fmt: skip
        polite = write_scenario(part / f"polite-{phase}.yaml", f"gw-fair-polite-{phase}", endpoint="chat",
                                stage=f"{{users: {POLITE_USERS}, duration: {FAIR_DURATION_S:g}s}}",
                                warmup_s=FAIR_WARMUP_S, prompt=PROMPT_TOKENS, output=OUTPUT_TOKENS,
                                key_env="VLAB_GW_KEY_POLITE")  # fmt: skip
        jobs = [(polite, "", part / f"polite-{phase}", env)]
        if greedy_sends:
            greedy = write_scenario(part / f"greedy-{phase}.yaml", f"gw-fair-greedy-{phase}", endpoint="chat",
                                    stage=f"{{rate: {GREEDY_RATE:g}, duration: {FAIR_DURATION_S:g}s}}",
                                    warmup_s=FAIR_WARMUP_S, prompt=PROMPT_TOKENS, output=OUTPUT_TOKENS,
                                    key_env="VLAB_GW_KEY_GREEDY")  # fmt: skip
            jobs.append((greedy, "", part / f"greedy-{phase}", env))
        what = f"greedy {GREEDY_RATE:g} req/s offered" if greedy_sends else "no greedy traffic"
        print(f"[fairness] {phase}: polite {POLITE_USERS} users, {what}", flush=True)
        v0 = vllm_counters(upstream)
        with gateway_process(config, upstream, part) as gw:
            run_sweeps([(sc, gw.url, d, e) for sc, _, d, e in jobs], part / "sweeps.log")
        runs = [Run.load(d, FAIR_WARMUP_S) for _, _, d, _ in jobs]
        ours = sum(int((r.requests.ok == 1).sum()) for r in runs)
        rejections: dict[str, int] = {}
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("status") == 429:
                rejections[rec["reason"]] = rejections.get(rec["reason"], 0) + 1
        out[phase] = {
            "greedy_limits": greedy_limits,
            "polite": level_numbers(runs[0]),
            "gateway_429_reasons": rejections,
            **server_side(v0, vllm_counters(upstream), ours),
        }
        if greedy_sends:
            gm = runs[1].measured()
            out[phase]["greedy"] = {
                **level_numbers(runs[1]),
                "sent": len(gm),
                "status_200": int((gm.status == 200).sum()),
                "status_429": int((gm.status == 429).sum()),
                "not_ok_rate": float((gm.ok == 0).mean()) if len(gm) else math.nan,
                "server_error_rate_429_excluded": float(((gm.ok == 0) & (gm.status != 429)).mean())
                if len(gm)
                else math.nan,
                "error_kind_of_429": sorted(set(gm[gm.status == 429].error_kind)),
            }
    return out


def _median_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0]} if rows else {}


def _gateway_log_ms(path: Path, field: str) -> list[float]:
    values = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "request" and rec.get(field) is not None and rec.get("status") == 200:
            values.append(float(rec[field]))
    return values


# ---------------------------------------------------------------------------------------------------- output
def _f(v: Any, spec: str = ".1f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


_NO_GREEDY = dict.fromkeys(
    (
        "sent",
        "status_200",
        "status_429",
        "output_tok_per_s",
        "not_ok_rate",
        "server_error_rate_429_excluded",
    ),
    math.nan,
)


def format_summary(s: dict[str, Any]) -> list[str]:
    lines = [f"# Gateway experiment, {s['date']} ({s['machine']})", ""]
    if "passthrough" in s:
        p = s["passthrough"]
        lines += [
            f"## Pass-through on the fake SSE server ({PASS_USERS} streams direct and {PASS_USERS} through the "
            f"gateway, {'at once' if p.get('together') else 'one after the other'}, {PASS_TOKENS} tokens "
            f"{PASS_INTERVAL_MS:g} ms apart): |client gap − server send gap|, ms",
            "",
            "| path | gaps | p50 | p99 | p99.9 | max | gaps off by ≥ ½ interval | client − server TTFT p50 / p99 "
            "| gateway CPU per event |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for path in ("direct", "gateway"):
            r = p[path]
            lines.append(
                f"| {path} | {r['gaps']:,} | {_f(r['gap_error_abs_p50_ms'], '.3f')} | "
                f"{_f(r['gap_error_abs_p99_ms'], '.3f')} | {_f(r['gap_error_abs_p999_ms'], '.3f')} | "
                f"{_f(r['gap_error_abs_max_ms'], '.2f')} | {r['gaps_over_half_interval']} | "
                f"{_f(r['ttft_transit_p50_ms'], '.2f')} / {_f(r['ttft_transit_p99_ms'], '.2f')} ms | "
                f"{_f(r['gateway_cpu_us_per_event'], '.0f')} µs |"
            )
        lines += ["", f"Added by the gateway: gap error p50 {_f(p['added_p50_ms'], '.3f')} ms, p99 "
                  f"{_f(p['added_p99_ms'], '.3f')} ms (p99 within 1 ms: {p['within_1ms']}); TTFT p50 "
                  f"{_f(p['ttft_added_p50_ms'], '+.2f')} ms, p99 {_f(p['ttft_added_p99_ms'], '+.2f')} ms.",
                  ""]  # fmt: skip
    if "overhead" in s and s["overhead"].get("mode") == "paired":
        o = s["overhead"]
        lines += [
            f"## Overhead, paired: half the users direct, half through the gateway, at the same time (chat, "
            f"{PROMPT_TOKENS}-token prompts, {OUTPUT_TOKENS} output tokens; median of {o['rounds']} round(s))",
            "",
            "| users (direct + gw) | measured (direct / gw) | TTFT p50 direct → gw | TTFT p99 direct → gw "
            "| TTFT p50 / p99 added | ITL p50 / p99 direct → gw | ITL p50 / p99 added | tok/s per path direct → gw "
            "(lost) | gateway forward lag p50 / p99 | gateway CPU per token | gateway CPU | load average "
            "| other clients' requests |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in o["levels"]:
            d, g = r["direct"], r["gateway"]
            n = r["users_per_path"]
            lines.append(
                f"| {n} + {n} | {d['n_measured']:.0f} / {g['n_measured']:.0f} | {_f(d['ttft_p50_ms'], '.0f')} → "
                f"{_f(g['ttft_p50_ms'], '.0f')} | {_f(d['ttft_p99_ms'], '.0f')} → {_f(g['ttft_p99_ms'], '.0f')} | "
                f"{_f(r['ttft_p50_added_ms'], '+.1f')} / {_f(r['ttft_p99_added_ms'], '+.1f')} ms | "
                f"{_f(d['itl_p50_ms'], '.1f')} / {_f(d['itl_p99_ms'], '.1f')} → {_f(g['itl_p50_ms'], '.1f')} / "
                f"{_f(g['itl_p99_ms'], '.1f')} | {_f(r['itl_p50_added_ms'], '+.2f')} / "
                f"{_f(r['itl_p99_added_ms'], '+.1f')} ms | {_f(d['output_tok_per_s'], '.0f')} → "
                f"{_f(g['output_tok_per_s'], '.0f')} ({_f(100 * r['tok_s_lost_fraction'], '+.1f')}%) | "
                f"{_f(r['forward_lag_p50_ms'], '.1f')} / {_f(r['forward_lag_p99_ms'], '.1f')} ms | "
                f"{_f(r['gateway_cpu_ms_per_token'], '.3f')} ms | {_f(100 * r['gateway_cpu_core_fraction'], '.1f')}% "
                f"of a core | {', '.join(_f(x, '.1f') for x in r['load_average'])} | "
                f"{', '.join(_f(x, '.0f') for x in r['foreign_requests'])} |"
            )
        lines += [
            "",
            f"Gateway's own time before the upstream send (admit_ms, 200s): p50 "
            f"{_f(o['gateway_admit_ms_p50'], '.2f')} ms, p99 {_f(o['gateway_admit_ms_p99'], '.2f')} ms.",
            "",
        ]
    elif "overhead" in s:
        o = s["overhead"]
        lines += [
            f"## Overhead against vLLM direct (chat, {PROMPT_TOKENS}-token prompts, {OUTPUT_TOKENS} output tokens; "
            f"median of {o['rounds']} round(s))",
            "",
            "| users | measured (direct / gw) | TTFT p50 direct → gw | TTFT p99 direct → gw | TTFT p50 / p99 added "
            "| ITL p99 direct → gw (added) | tok/s direct → gw (lost) | gateway CPU per token | gateway CPU "
            "| other clients' requests |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in o["levels"]:
            d, g = r["direct"], r["gateway"]
            lines.append(
                f"| {r['users']} | {d['n_measured']:.0f} / {g['n_measured']:.0f} | {_f(d['ttft_p50_ms'], '.0f')} → "
                f"{_f(g['ttft_p50_ms'], '.0f')} | {_f(d['ttft_p99_ms'], '.0f')} → {_f(g['ttft_p99_ms'], '.0f')} | "
                f"{_f(r['ttft_p50_added_ms'], '+.0f')} / {_f(r['ttft_p99_added_ms'], '+.0f')} ms | "
                f"{_f(d['itl_p99_ms'], '.1f')} → {_f(g['itl_p99_ms'], '.1f')} ({_f(r['itl_p99_added_ms'], '+.1f')}) | "
                f"{_f(d['output_tok_per_s'], '.0f')} → {_f(g['output_tok_per_s'], '.0f')} "
                f"({_f(100 * r['tok_s_lost_fraction'], '+.1f')}%) | {_f(r['gateway_cpu_ms_per_token'], '.3f')} ms | "
                f"{_f(100 * r['gateway_cpu_core_fraction'], '.1f')}% of a core | "
                f"{', '.join(_f(x, '.0f') for x in r['foreign_requests'])} |"
            )
        lines += [
            "",
            "Where the difference comes from: vLLM's own means (its /metrics, over each whole sweep) against the "
            "client's; the relay's share is (client − vLLM) through the gateway minus (client − vLLM) direct.",
            "",
            "| users | vLLM mean TTFT direct → gw | vLLM mean ITL direct → gw | relay adds to TTFT / ITL (means) "
            "| load average after direct / gw | pairs re-run (other clients) |",
            "|---|---|---|---|---|---|",
        ]
        for r in o["levels"]:
            d, g = r["direct"], r["gateway"]
            lines.append(
                f"| {r['users']} | {_f(d['server_ttft_mean_ms'], '.0f')} → {_f(g['server_ttft_mean_ms'], '.0f')} | "
                f"{_f(d['server_itl_mean_ms'], '.1f')} → {_f(g['server_itl_mean_ms'], '.1f')} | "
                f"{_f(r['relay_ttft_added_ms'], '+.1f')} / {_f(r['relay_itl_added_ms'], '+.2f')} ms | "
                f"{_f(d['load_average'], '.1f')} / {_f(g['load_average'], '.1f')} | "
                f"{o['pairs_discarded'].get(r['users'], 0)} |"
            )
        lines += [
            "",
            f"Gateway's own time before the upstream send (admit_ms, 200s): p50 "
            f"{_f(o['gateway_admit_ms_p50'], '.2f')} ms, p99 {_f(o['gateway_admit_ms_p99'], '.2f')} ms.",
            "",
        ]
    if "fairness" in s:
        lines += [
            f"## Fairness: greedy key {GREEDY_RATE:g} req/s offered (open loop), polite key {POLITE_USERS} users; "
            f"SLO TTFT ≤ {SLO['ttft_ms']:g} ms, mean ITL ≤ {SLO['itl_ms']:g} ms",
            "",
            "| phase | polite: requests, meeting SLO, TTFT p50 / p99 | greedy: sent, 200, 429 | greedy served tok/s "
            "| not ok (the suite's error rate before rate_limited) / 429s excluded | 429 reasons "
            "| other clients' requests |",
            "|---|---|---|---|---|---|---|",
        ]
        for phase, r in s["fairness"].items():
            p, g = r["polite"], r.get("greedy", _NO_GREEDY)
            lines.append(
                f"| {phase} | {p['n_measured']}, {_f(100 * p['slo_fraction'], '.0f')}%, "
                f"{_f(p['ttft_p50_ms'], '.0f')} / {_f(p['ttft_p99_ms'], '.0f')} ms | {_f(g['sent'], '.0f')}, "
                f"{_f(g['status_200'], '.0f')}, {_f(g['status_429'], '.0f')} | {_f(g['output_tok_per_s'], '.0f')} | "
                f"{_f(100 * g['not_ok_rate'], '.0f')}% / "
                f"{_f(100 * g['server_error_rate_429_excluded'], '.0f')}% | "
                f"{r['gateway_429_reasons'] or '—'} | {_f(r['foreign_requests'], '.0f')} |"
            )
        lines.append("")
    lines.append(f"Keys found on disk: {s['keys_on_disk'] or 'none'}.")
    return lines


def keys_on_disk(folder: Path, keys: dict[str, str]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            found += [f"{kid} in {path.relative_to(folder)}" for kid, key in keys.items() if key.encode() in text]
    return found


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item"):
        return _json_safe(obj.item())
    return obj


def run(
    upstream: str,
    parts: list[str],
    rounds: int,
    levels: list[int],
    out: Path | None,
    sequential: bool = False,
    pass_together: bool = False,
) -> Path:
    from vlab.client.http import http_get
    from vlab.core.runfolder import new_run_dir

    folder = out or new_run_dir("gateway-experiment", REPORTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    if any(p != "passthrough" for p in parts) and http_get(f"{upstream}/health")[0] != 200:
        raise UserError(f"upstream {upstream}: GET /health is not 200; start vLLM or pass --upstream/--profile")
    keys = {name: generate_key() for name in ("pass", "bench", "polite", "greedy")}
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} vCPU, shared", "upstream": upstream,
        "load_average_start": os.getloadavg(),
    }  # fmt: skip
    print(f"gateway experiment: {', '.join(parts)}; folder {folder}", flush=True)
    steps = {
        "passthrough": lambda: part_passthrough(folder, keys, together=pass_together),
        "overhead": lambda: (part_overhead if sequential else part_paired)(folder, upstream, keys, rounds, levels),
        "fairness": lambda: part_fairness(folder, upstream, keys),
    }
    for name in PARTS:
        if name in parts:
            if name == "passthrough":
                how = "at once" if pass_together else "one after the other"
                print(f"[passthrough] fake SSE server, direct and through the gateway {how}", flush=True)
            summary[name] = steps[name]()
            (folder / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")  # so far
    summary["load_average_end"] = os.getloadavg()
    summary["keys_on_disk"] = keys_on_disk(folder, keys)
    (folder / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    lines = format_summary(summary)
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return folder


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlab gateway --experiment", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--upstream", help=f"vLLM base URL (default {DEFAULT_UPSTREAM}).")
    where.add_argument("--profile", help="Start vLLM from this profile for the run instead.")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Comma-separated, from: {', '.join(PARTS)}.")
    parser.add_argument("--rounds", type=int, default=1, help="Overhead: rounds of direct/gateway per level.")
    parser.add_argument("--levels", default=",".join(str(u) for u in LEVELS), help="Overhead: user levels.")
    parser.add_argument(
        "--sequential", action="store_true",
        help="Overhead: all users direct, then all through the gateway (shows the server's slowdown; noisy on a "
        "shared machine) instead of half and half at the same time.",
    )  # fmt: skip
    parser.add_argument(
        "--pass-together", action="store_true",
        help="Passthrough: run the direct and gateway streams at the same time (both then share the CPU).",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="Experiment folder (default reports/<time>-gateway-experiment).")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        if not parts or any(p not in PARTS for p in parts):
            raise UserError(f"--parts: expected some of {', '.join(PARTS)}", exit_code=2)
        try:
            levels = [int(u) for u in args.levels.split(",")]
        except ValueError:
            raise UserError("--levels: expected comma-separated user counts", exit_code=2) from None
        if any(u not in LEVELS for u in levels):
            raise UserError(f"--levels: each of {', '.join(map(str, LEVELS))}", exit_code=2)
        if args.profile:
            from server.launcher import start_server
            from server.profile import load_profile
            from vlab.client.http import find_free_port

            with start_server(load_profile(args.profile), port=find_free_port()) as server:
                run(server.base_url, parts, args.rounds, levels, args.out, args.sequential, args.pass_together)
        else:
            from gateway.config import check_upstream_url

            try:
                upstream = check_upstream_url(args.upstream or DEFAULT_UPSTREAM)
            except ValueError as exc:
                raise UserError(f"--upstream: {exc}", exit_code=2) from None
            run(upstream, parts, args.rounds, levels, args.out, args.sequential, args.pass_together)
    except UserError as exc:
        print(f"gateway.experiment: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gateway.experiment: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
