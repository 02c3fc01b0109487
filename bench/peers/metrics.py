"""A tool's records against the fake server's truth: capacity, CPU and timing error.

Definitions (times in ms unless named otherwise):

- steady window [lo, hi] (monotonic s): lo = first send + `warmup_s`; hi = last token arrival − 0.5 s, ended
  earlier (0.25 s before) where the server saw streams cut off by the tool's own stop (shutdown is not steady
  state);
- streamed tokens/s = token events that arrived at the tool inside the window / window length. Tools that keep
  only the first and last token time per request get their events spread evenly between the two (exact for evenly
  paced streams, which bench 1's are);
- other CPU = the whole machine's busy CPU seconds in the window − the tool's − the server's, per second: the
  noise of a shared machine (above 0.5 of a core a row is flagged noisy);
- client CPU = CPU seconds (user + system) of the tool's whole process tree in the window / window length
  (a fraction of one core); µs CPU per token = client CPU / streamed tokens/s × 10⁶; tokens/s per client core =
  streamed tokens/s / client CPU (tokens per CPU-second: what one whole core would stream at this cost);
- ITL timing error = |client gap − server send gap| for the same request and the same pair of token events, over
  gaps whose client arrival lies in the window; only for tools that keep every event's time and saw every event
  the server sent for that request;
- TTFT error = |client TTFT − server TTFT| over every matched request (the start-up burst included: opening N
  connections at once is part of each tool's behaviour), where server TTFT = first token event's send − request
  arrival (first content, not chat's role chunk);
- mean-ITL error (tools without per-event times) = |the tool's per-request ITL − the server's mean gap|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.peers.common import ClientRequest, ToolReport
from bench.peers.truth import TrueRequest


@dataclass
class Capacity:
    """Bench 1, one tool at one load. NaN where not measurable (see `notes`)."""

    tool: str
    mode: str
    streams: int
    status: str = "ok"
    window_s: float = math.nan
    tokens_per_s: float = math.nan
    client_cpu: float = math.nan
    cpu_us_per_token: float = math.nan
    tokens_per_s_per_core: float = math.nan
    """Streamed tokens per second of client CPU (tokens/s ÷ client CPU in cores): the capacity of one client
    core, robust to a shared machine that gives the tool less than a whole core."""
    server_cpu: float = math.nan
    other_cpu: float = math.nan
    """Busy time of every other process on the machine in the window (fraction of one core): the noise."""
    itl_err_p50: float = math.nan
    itl_err_p99: float = math.nan
    itl_err_p999: float = math.nan
    itl_gaps: int = 0
    ttft_err_p50: float = math.nan
    ttft_err_p99: float = math.nan
    mean_itl_err_p99: float = math.nan
    matched: int = 0
    unmatched: int = 0
    exact_times: bool = True
    saturation_warning: bool | None = None
    notes: list[str] = field(default_factory=list)


def _fill_from_truth(req: ClientRequest, true: TrueRequest | None) -> ClientRequest:
    """Tools without absolute times: place the request at the server's arrival time (loopback: same instant ± µs)."""
    if req.start_mono_s is None and true is not None:
        req.start_mono_s = true.arrival_s
        if req.ttft_ms is not None:
            req.first_token_mono_s = true.arrival_s + req.ttft_ms / 1000.0
        if req.e2e_ms is not None:
            req.last_token_mono_s = true.arrival_s + req.e2e_ms / 1000.0
    return req


def percentiles(values: list[float] | np.ndarray, qs: tuple[float, ...]) -> list[float]:
    arr = np.asarray(values, dtype=float)
    return [float(v) for v in np.percentile(arr, qs)] if arr.size else [math.nan] * len(qs)


def capacity(
    result: Capacity,
    report: ToolReport,
    truth: dict[int, TrueRequest],
    samples: list[tuple[float, float, float, float]],
    warmup_s: float,
) -> Capacity:
    """Fill `result` from one run's records, CPU samples and the server's truth."""
    reqs = [_fill_from_truth(r, truth.get(r.rid) if r.rid is not None else None) for r in report.requests]
    arrivals: list[float] = []
    exact = True
    for r in reqs:
        true = truth.get(r.rid) if r.rid is not None else None
        n = len(true.token_s) if true is not None and r.ok else (r.output_tokens or 0)
        times, is_exact = r.event_times_mono_s(n)
        exact &= is_exact or not times
        arrivals.extend(times)
    starts = [r.start_mono_s for r in reqs if r.start_mono_s is not None]
    if not arrivals or not starts:
        result.status = "no token events recorded"
        return result
    result.exact_times = exact
    if not exact:
        result.notes.append("tokens/s from first/last token times (no per-event times)")
    lo = min(starts) + warmup_s
    hi = max(arrivals) - 0.5
    cut_ends = [t.token_s[-1] for t in truth.values() if not t.complete and t.token_s and t.status == 200]
    late = [t for t in cut_ends if t > lo + 1.0]
    if late:
        hi = min(hi, min(late) - 0.25)
    if hi <= lo + 0.5:
        result.status = f"steady window too short ({hi - lo:.2f} s)"
        return result
    result.window_s = hi - lo
    arr = np.asarray(arrivals)
    result.tokens_per_s = float(((arr >= lo) & (arr <= hi)).sum()) / result.window_s
    if len(samples) >= 2:
        s = np.asarray(samples)
        client = np.interp([lo, hi], s[:, 0], s[:, 1])
        server = np.interp([lo, hi], s[:, 0], s[:, 2])
        result.client_cpu = float(client[1] - client[0]) / result.window_s
        result.server_cpu = float(server[1] - server[0]) / result.window_s
        busy = np.interp([lo, hi], s[:, 0], s[:, 3])
        result.other_cpu = max(0.0, float(busy[1] - busy[0]) / result.window_s - result.client_cpu - result.server_cpu)
        if result.tokens_per_s > 0:
            result.cpu_us_per_token = result.client_cpu / result.tokens_per_s * 1e6
    itl_err: list[np.ndarray] = []
    ttft_err: list[float] = []
    mean_itl_err: list[float] = []
    for r in reqs:
        true = truth.get(r.rid) if r.rid is not None else None
        if true is None or not r.ok or not true.complete:
            result.unmatched += int(r.ok)
            continue
        result.matched += 1
        if r.ttft_ms is not None and true.ttft_ms is not None:
            ttft_err.append(abs(r.ttft_ms - true.ttft_ms))
        if r.token_ms is not None and r.start_mono_s is not None:
            if len(r.token_ms) != len(true.token_s):
                result.unmatched += 1
                continue
            t_client = np.asarray(r.token_ms)
            wall = r.start_mono_s + t_client[1:] / 1000.0
            keep = (wall >= lo) & (wall <= hi)
            gaps_server = np.diff(np.asarray(true.token_s)) * 1000.0
            itl_err.append(np.abs(np.diff(t_client) - gaps_server)[keep])
        elif r.itl_ms is not None and r.last_token_mono_s is not None and lo <= r.last_token_mono_s <= hi:
            gaps = true.gaps_ms
            if gaps:
                mean_itl_err.append(abs(r.itl_ms - sum(gaps) / len(gaps)))
    if itl_err:
        err = np.concatenate(itl_err)
        result.itl_gaps = int(err.size)
        result.itl_err_p50, result.itl_err_p99, result.itl_err_p999 = percentiles(err, (50, 99, 99.9))
    result.ttft_err_p50, result.ttft_err_p99 = percentiles(ttft_err, (50, 99))
    if mean_itl_err:
        result.mean_itl_err_p99 = percentiles(mean_itl_err, (99,))[0]
    return result


@dataclass
class Observed:
    """Bench 2: what a tool (or the truth) says about one edge case. Times in ms (means over its successful
    requests); `errors` counts requests the tool reported as failed."""

    ttft_ms: float = math.nan
    itl_ms: float = math.nan
    tpot_ms: float = math.nan
    output_tokens: float = math.nan
    ok: int = 0
    errors: int = 0


def truth_summary(truth: dict[int, TrueRequest]) -> Observed:
    """The true values: TTFT to the first token event, ITL per event (pooled gaps), TPOT per token, usage tokens;
    a request is a success when it was answered 200 and streamed to the end."""
    ok = [t for t in truth.values() if t.complete and t.status == 200]
    gaps = [g for t in ok for g in t.gaps_ms]

    def avg(values: list[float | None]) -> float:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else math.nan

    return Observed(
        ttft_ms=avg([t.ttft_ms for t in ok]),
        itl_ms=float(np.mean(gaps)) if gaps else math.nan,
        tpot_ms=avg([t.tpot_ms for t in ok]),
        output_tokens=avg([float(t.tokens) for t in ok]),
        ok=len(ok),
        errors=len(truth) - len(ok),
    )


def observed(report: ToolReport) -> Observed:
    """A tool's own aggregates as an Observed (its definitions, its numbers)."""
    a = report.aggregates
    return Observed(a.ttft_ms, a.itl_ms, a.tpot_ms, a.output_tokens_mean, a.ok, a.errors)
