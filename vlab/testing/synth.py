"""Synthetic run folders in the exact on-disk format of a real run (`vlab.core.records`, `vlab.core.runfolder`).

Used by the benchmark (`bench/bench_report.py`: a million requests) and to make the test fixtures. Everything is
vectorized numpy; the values are plausible, not physical: per level with target `u` (users or arrivals/s),
requests start uniformly inside the level, TTFT grows with `u` (queueing), token gaps grow mildly with `u`, and the
number of requests per level saturates above `saturation` so output throughput shows a knee.

Times: `t_start_s` in Unix seconds, every `_ms` column in milliseconds, token `t_ms` since the send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlab.core.metrics import itl_mean, tpot
from vlab.core.records import COLUMNS, RECORDS_FORMAT, RequestRecord
from vlab.core.runfolder import Level, LoadGeneratorInfo, RunMeta, ServerInfoMeta, write_levels
from vlab.core.scenario import Scenario


@dataclass
class SynthSpec:
    """What to generate. `requests_per_unit` requests per second per unit of target (until `saturation`)."""

    targets: list[float] = field(default_factory=lambda: [1, 2, 4, 8])
    duration_s: float = 20.0
    warmup_s: float = 2.0
    cooldown_s: float = 1.0
    open_loop: bool = False
    n_events: int = 16
    prompt_tokens: int = 64
    requests_per_unit: float = 1.0
    saturation: float = 4.0
    latency_scale: float = 1.0
    """Multiplies every time the server takes (first chunk and token gaps): 2.0 is a server twice as slow."""
    total_requests: int | None = None
    """When set, scale every level's count so the run holds about this many requests."""
    error_fraction: float = 0.02
    error_message: str = "Internal Server Error"
    slo_ttft_ms: float | None = 600.0
    slo_e2e_ms: float | None = None
    status: str = "completed"
    name: str = "synthetic"
    server_profile: str | None = "synthetic-profile"
    seed: int = 0
    start_s: float = 1_800_000_000.0


def make_run(run_dir: Path, spec: SynthSpec) -> Path:
    """Write run.json, levels.csv, requests.csv and tokens.csv into `run_dir` (created) and return it."""
    rng = np.random.default_rng(spec.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    targets = np.asarray(spec.targets, dtype=float)
    counts = np.maximum(1, np.round(spec.duration_s * spec.requests_per_unit * np.minimum(targets, spec.saturation)))
    if spec.total_requests is not None:
        counts = np.maximum(1, np.round(counts * spec.total_requests / counts.sum()))
        counts[-1] = max(1, counts[-1] + spec.total_requests - counts.sum())  # exactly total_requests
    counts = counts.astype(np.int64)
    n = int(counts.sum())
    level = np.repeat(np.arange(len(targets)), counts)
    target = targets[level]
    lvl_start = spec.start_s + np.arange(len(targets)) * spec.duration_s
    t_start = lvl_start[level] + rng.uniform(0, spec.duration_s * 0.97, n)
    order = np.lexsort((t_start, level))
    level, target, t_start = level[order], target[order], t_start[order]

    load = np.maximum(target, 1.0)
    first_chunk = rng.lognormal(np.log(60.0 * spec.latency_scale * load**0.8), 0.3, n)
    gap_mean = 10.0 * spec.latency_scale * (1.0 + 0.15 * np.log2(load))
    k = spec.n_events
    gaps = rng.gamma(4.0, (gap_mean / 4.0)[:, None], size=(n, max(k - 1, 0)))
    first = first_chunk + rng.uniform(0.5, 2.0, n)  # the first token event follows the role chunk
    times = np.concatenate([first[:, None], first[:, None] + np.cumsum(gaps, axis=1)], axis=1)
    e2e = times[:, -1]
    ttft = times[:, 0]  # TTFT ends at the first token event (records format 2)
    itl = itl_mean(times[:, 0], times[:, -1], np.full(n, k))

    completion = np.full(n, k, dtype=np.int64)
    multi = rng.random(n) < 0.01
    completion[multi] += 1
    early = rng.random(n) < 0.01
    completion[early] = max(k - 1, 1)
    max_tokens = np.full(n, k, dtype=np.int64)
    max_tokens[multi] = k + 1  # multi-token events: more tokens than events, still all requested
    prompt = np.full(n, spec.prompt_tokens, dtype=np.int64)
    prompt[rng.random(n) < 0.005] += 1
    tpot_ms = tpot(e2e, ttft, completion)
    queue_wait = np.zeros(n)
    if spec.open_loop:
        waited = rng.random(n) < np.clip((target - spec.saturation) / np.maximum(target, 1), 0, 0.9)
        queue_wait[waited] = rng.exponential(200.0, int(waited.sum()))

    ok = rng.random(n) >= spec.error_fraction
    kinds = np.array(["http", "read_timeout"])[rng.integers(0, 2, n)]
    error_kind = np.where(ok, "", kinds)
    error = np.where(ok, "", np.where(error_kind == "http", spec.error_message, "no data for 60 s"))
    status = np.where(ok | (error_kind != "http"), 200, 500)
    n_events = np.where(ok, k, 0)
    finish = np.where(ok, np.where(early, "stop", "length"), "")
    for arr in (first_chunk, ttft, e2e, itl, tpot_ms):
        arr[~ok] = np.nan
    prompt_out = np.where(ok, prompt, -1)
    completion_out = np.where(ok, completion, -1)

    ids = np.char.add("gen-", np.arange(n).astype(str))
    req = pd.DataFrame(
        {
            "request_id": ids,
            "level": level,
            "level_target": target,
            "user": np.arange(n) % 8,
            "node": "gen",
            "endpoint": "chat",
            "t_start_s": t_start,
            "queue_wait_ms": queue_wait,
            "waited_for_slot": (queue_wait > 0).astype(int),
            "first_chunk_ms": first_chunk,
            "ttft_ms": ttft,
            "e2e_ms": e2e,
            "itl_mean_ms": itl,
            "tpot_ms": tpot_ms,
            "n_events": n_events,
            "prompt_tokens": prompt_out,
            "completion_tokens": completion_out,
            "prompt_tokens_requested": spec.prompt_tokens,
            "max_tokens": max_tokens,
            "finish_reason": finish,
            "multi_token": (multi & ok).astype(int),
            "ok": ok.astype(int),
            "status": status,
            "error_kind": error_kind,
            "error": error,
            "prefix_id": -1,
            "retrieval_ms": np.nan,
        }
    )
    for name, column in COLUMNS.items():  # the columns of features this generator does not model
        if name not in req and column.missing is not None:
            req[name] = column.missing
    req = req[RequestRecord.columns()]
    req.to_csv(run_dir / "requests.csv", index=False, float_format="%.6f", lineterminator="\n")

    tok_rows = ok.nonzero()[0]
    tok = pd.DataFrame(
        {
            "request_id": np.repeat(ids[tok_rows], k),
            "i": np.tile(np.arange(k), len(tok_rows)),
            "t_ms": times[tok_rows].ravel(),
        }
    )
    tok.to_csv(run_dir / "tokens.csv", index=False, float_format="%.3f", lineterminator="\n", chunksize=2_000_000)

    write_levels(
        run_dir,
        [
            Level(i, float(t), float(st), float(st) + spec.duration_s, "time")
            for i, (t, st) in enumerate(zip(targets, lvl_start, strict=True))
        ],
    )

    stages = [
        {"rate": float(t), "duration": spec.duration_s}
        if spec.open_loop
        else {"users": int(t), "duration": spec.duration_s}
        for t in targets
    ]
    scenario = Scenario.model_validate(
        {
            "name": spec.name,
            "description": "Synthetic run for tests and benchmarks.",
            "load": {"stages": stages, "warmup_s": spec.warmup_s, "cooldown_s": spec.cooldown_s},
            "data": {"prompt_tokens": spec.prompt_tokens, "output_tokens": k},
            "slo": {"ttft_ms": spec.slo_ttft_ms, "e2e_ms": spec.slo_e2e_ms},
        }
    )
    RunMeta(
        format=RECORDS_FORMAT,
        scenario=scenario,
        host="http://127.0.0.1:8000",
        suite_commit="abc1234",
        load_generator=LoadGeneratorInfo(hostname="synth", platform="synthetic", cpus=2),
        started_at=spec.start_s,
        ended_at=spec.start_s + spec.duration_s * len(targets),
        status=spec.status,  # type: ignore[arg-type]
        server=ServerInfoMeta(model="synthetic-model", max_model_len=2048, vllm_version="0.0.0"),
        records=n,
        server_profile=spec.server_profile,
    ).write(run_dir)
    return run_dir
