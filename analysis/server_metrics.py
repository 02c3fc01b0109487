"""The server's own view of a run: the `/metrics` samples of `server_metrics.csv` (columns: `vlab.core.telemetry`),
loaded, turned into per-window rates, and aligned with the client's levels and records.

Definitions (all times wall-clock Unix seconds; a sample's time `t_s` is the middle of its scrape):

- counter increment of sample k: Δc_k = c_k − c_{k−1}; a negative difference is a counter reset (server restart),
  then Δc_k = c_k. Δc_0 = 0.
- preemptions in a span = Σ Δpreemptions_k over samples k with t_k in the span.
- prefix-cache hit rate of a span = Σ Δhits / Σ Δqueries (tokens) over the span's samples; NaN when no query.
- per-sample-window server mean of a histogram h: Δh_sum_k / Δh_count_k (s → ms), NaN without observations.
- per level (levels.csv) [start_s, end_s]: max/mean running and waiting, peak/mean KV usage over the samples inside
  it; preemptions and prefix hit rate over the samples in (start_s, end_s].
- server vs client, per level, over the level's measurement window W = [start_s + warmup, end_s − cooldown]:
  a = first sample at or after W's start, b = last sample at or before W's end; the server mean of TTFT (or E2E) is
  Σ Δsum / Σ Δcount over samples in (t_a, t_b], ms. The client mean is over the successful requests whose first
  token (t_start_s + ttft_ms/1000) — or end, for E2E — falls in (t_a, t_b]: the same requests the server observed
  then. overhead = client mean − server mean: network, HTTP and API-server front end, and client time.
  ITL compares the server's inter-token mean with the client's pooled mean gap Σ(e2e − ttft)/Σ(n_events − 1)
  over requests ending in (t_a, t_b]. The server's output rate there: Σ Δgeneration_tokens / (t_b − t_a).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vlab.core.jsonsafe import read_json_object
from vlab.core.runfolder import SERVER_METRICS_CSV as METRICS_CSV
from vlab.core.runfolder import SERVER_METRICS_JSON as METRICS_JSON
from vlab.core.telemetry import SERVER_COUNTERS, SERVER_HISTOGRAMS

if TYPE_CHECKING:
    from analysis.load import RunData

COUNTERS = SERVER_COUNTERS
HISTOGRAMS = SERVER_HISTOGRAMS
FOREIGN_MARGIN = 0.10
"""Server-observed requests above the client's count by more than this fraction (+2) mean other clients."""


@dataclass
class ServerSeries:
    """The samples of one run. `frame`: t_s, the raw columns of server_metrics.csv, and derived columns
    `d_<counter>` and `d_<hist>_sum`/`d_<hist>_count` (increments), `prefix_hit_rate` and `<hist>_window_ms`."""

    available: bool
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)

    def has(self, column: str) -> bool:
        return column in self.frame and bool(self.frame[column].notna().any())


def _increments(values: np.ndarray) -> np.ndarray:
    """Δc_k = c_k − c_{k−1}, Δc_0 = 0; a negative step (reset) counts as c_k; NaN stays NaN."""
    d = np.zeros_like(values, dtype=float)
    if len(values) > 1:
        step = np.diff(values)
        d[1:] = np.where(step < 0, values[1:], step)
    return d


def _read_csv(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a partial last line (killed mid-write)
    if not text.strip():
        return pd.DataFrame()
    from io import StringIO

    frame = pd.read_csv(StringIO(text))
    frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame[frame["t_s"].notna()].sort_values("t_s", kind="stable").reset_index(drop=True)


def load_server_metrics(run_dir: Path | str) -> ServerSeries:
    """Read server_metrics.csv/json of a run folder. Never raises: a missing or unusable file gives
    `available=False` with a one-line reason."""
    run_dir = Path(run_dir)
    info = read_json_object(run_dir / METRICS_JSON)
    csv = run_dir / METRICS_CSV
    if not csv.is_file():
        reason = str(info.get("reason") or "")
        if not reason:
            reason = "no server_metrics.csv in the run folder (sampling off, or a run recorded before it existed)"
        return ServerSeries(False, reason, info)
    try:
        frame = _read_csv(csv)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        return ServerSeries(False, f"{csv.name} unreadable: {str(exc).splitlines()[0] if str(exc) else exc}", info)
    if frame.empty:
        return ServerSeries(False, f"{csv.name} holds no sample", info)
    for name in COUNTERS:
        if name in frame:
            frame[f"d_{name}"] = _increments(frame[name].to_numpy(dtype=float))
    for name in HISTOGRAMS:
        if f"{name}_count" in frame:
            ds = _increments(frame[f"{name}_sum"].to_numpy(dtype=float))
            dc = _increments(frame[f"{name}_count"].to_numpy(dtype=float))
            frame[f"d_{name}_sum"], frame[f"d_{name}_count"] = ds, dc
            with np.errstate(invalid="ignore", divide="ignore"):
                frame[f"{name}_window_ms"] = np.where(dc > 0, ds / dc * 1000.0, np.nan)
    if "d_prefix_queries" in frame and "d_prefix_hits" in frame:
        dq, dh = frame["d_prefix_queries"].to_numpy(), frame["d_prefix_hits"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["prefix_hit_rate"] = np.where(dq > 0, dh / dq, np.nan)
    return ServerSeries(True, "", info, frame)


# ------------------------------------------------------------------------------------------------------ summaries
@dataclass
class ServerHeadline:
    """Run-wide server numbers. KV usage as a fraction (0–1); counts are increments over the run."""

    samples: int = 0
    interval_s: float = math.nan
    """Median time between samples, s."""
    kv_capacity_tokens: int | None = None
    block_size: int | None = None
    num_blocks: int | None = None
    peak_kv_usage: float = math.nan
    peak_kv_level: int | None = None
    peak_kv_target: float | None = None
    max_running: float = math.nan
    max_waiting: float = math.nan
    first_waiting_level: int | None = None
    first_waiting_target: float | None = None
    waiting_levels: list[int] = field(default_factory=list)
    preemptions: float = math.nan
    prefix_hit_rate: float = math.nan
    prefix_queries: float = math.nan
    server_ttft_mean_ms: float = math.nan
    client_ttft_mean_ms: float = math.nan
    server_requests: float = math.nan
    """Δ count of the server's TTFT histogram over the sampled span: requests that got a first token."""
    client_requests: int = 0
    """Successful client requests whose first token fell inside the sampled span."""
    sampler_cpu_ms: float = math.nan
    """Mean CPU ms per sample of the sampler process (fetch + parse + write)."""


@dataclass
class ServerSummary:
    """What the report shows from the server's metrics: the series, the per-level table and the headline."""

    series: ServerSeries
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    headline: ServerHeadline = field(default_factory=ServerHeadline)

    @property
    def available(self) -> bool:
        return self.series.available

    def to_json(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.series.reason}
        return {
            "available": True,
            "names": self.series.info.get("names"),
            "headline": asdict(self.headline),
            "levels": self.table.to_dict(orient="records"),
        }


def _span_mask(t: np.ndarray, lo: float, hi: float, closed_left: bool = False) -> np.ndarray:
    return ((t >= lo) if closed_left else (t > lo)) & (t <= hi)


def _ratio_sum(frame: pd.DataFrame, num: str, den: str, mask: np.ndarray) -> tuple[float, float]:
    """(Σnum/Σden over the masked samples, Σden); NaN ratio when Σden is 0 or a column is missing."""
    if num not in frame or den not in frame:
        return math.nan, math.nan
    n = float(np.nansum(frame[num].to_numpy()[mask]))
    d = float(np.nansum(frame[den].to_numpy()[mask]))
    return (n / d if d > 0 else math.nan), d


def _max(frame: pd.DataFrame, col: str, mask: np.ndarray) -> float:
    if col not in frame or not mask.any():
        return math.nan
    vals = frame[col].to_numpy(dtype=float)[mask]
    return float(np.nanmax(vals)) if np.isfinite(vals).any() else math.nan


def _mean(frame: pd.DataFrame, col: str, mask: np.ndarray) -> float:
    if col not in frame or not mask.any():
        return math.nan
    vals = frame[col].to_numpy(dtype=float)[mask]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan


def _client_mean(values: np.ndarray, when: np.ndarray, lo: float, hi: float) -> tuple[float, int]:
    sel = _span_mask(when, lo, hi) & np.isfinite(values)
    return (float(values[sel].mean()) if sel.any() else math.nan), int(sel.sum())


def summarize_server(run: RunData, table: pd.DataFrame) -> ServerSummary:
    """Per-level server table and headline for a run whose per-level client `table` (analysis.summary) is known."""
    series = load_server_metrics(run.path)
    out = ServerSummary(series)
    if not series.available:
        return out
    f = series.frame
    t = f["t_s"].to_numpy(dtype=float)
    req = run.requests
    ok = req["ok"].to_numpy()
    # Every request that got a first token, failed or cut off later or not: the server's TTFT histogram counts
    # exactly those, so comparing with successful requests only would compare two different populations.
    ttft = req["ttft_ms"].to_numpy(dtype=float)
    e2e = np.where(ok, req["e2e_ms"].to_numpy(dtype=float), np.nan)
    start = req["t_start_s"].to_numpy(dtype=float)
    first_token = start + ttft / 1000.0
    end = req["end_s"].to_numpy(dtype=float)
    decode_ms = e2e - ttft
    gaps = np.where(ok, req["n_events"].to_numpy(dtype=float) - 1.0, np.nan)

    rows: list[dict[str, Any]] = []
    for r in table.itertuples(index=False):
        level_mask = _span_mask(t, float(r.start_s), float(r.end_s), closed_left=True)
        after_start = _span_mask(t, float(r.start_s), float(r.end_s))
        rec: dict[str, Any] = {"level": int(r.level), "target": float(r.target), "samples": int(level_mask.sum())}
        rec["max_running"] = _max(f, "running", level_mask)
        rec["mean_running"] = _mean(f, "running", level_mask)
        rec["max_waiting"] = _max(f, "waiting", level_mask)
        rec["mean_waiting"] = _mean(f, "waiting", level_mask)
        rec["peak_kv_usage"] = _max(f, "kv_cache_usage", level_mask)
        rec["mean_kv_usage"] = _mean(f, "kv_cache_usage", level_mask)
        rec["preemptions"] = (
            float(np.nansum(f["d_preemptions"].to_numpy()[after_start])) if "d_preemptions" in f else math.nan
        )
        rec["prefix_hit_rate"], rec["prefix_queries"] = _ratio_sum(f, "d_prefix_hits", "d_prefix_queries", after_start)
        # server vs client over the measurement window, between the samples that bracket it from inside
        inside = np.flatnonzero((t >= float(r.window_start_s)) & (t <= float(r.window_end_s)))
        lo = hi = math.nan
        if inside.size >= 2:
            lo, hi = float(t[inside[0]]), float(t[inside[-1]])
        rec["compare_start_s"], rec["compare_end_s"] = lo, hi
        span = _span_mask(t, lo, hi) if math.isfinite(lo) else np.zeros(len(t), dtype=bool)
        for name, values, when in (("ttft", ttft, first_token), ("e2e", e2e, end)):
            server_s, n_server = _ratio_sum(f, f"d_{name}_sum", f"d_{name}_count", span)
            client, n_client = _client_mean(values, when, lo, hi) if math.isfinite(lo) else (math.nan, 0)
            rec[f"server_{name}_mean_ms"] = server_s * 1000.0
            rec[f"server_{name}_n"] = n_server
            rec[f"client_{name}_mean_ms"] = client
            rec[f"client_{name}_n"] = n_client
            rec[f"{name}_overhead_ms"] = client - server_s * 1000.0
        rec["server_gen_tok_per_s"] = (
            float(np.nansum(f["d_generation_tokens"].to_numpy()[span])) / (hi - lo)
            if "d_generation_tokens" in f and math.isfinite(lo) and hi > lo
            else math.nan
        )
        queue_s, _ = _ratio_sum(f, "d_queue_time_sum", "d_queue_time_count", span)
        rec["server_queue_mean_ms"] = queue_s * 1000.0
        itl_s, _ = _ratio_sum(f, "d_itl_sum", "d_itl_count", span)
        rec["server_itl_mean_ms"] = itl_s * 1000.0
        sel = _span_mask(end, lo, hi) & np.isfinite(decode_ms) & (gaps > 0) if math.isfinite(lo) else None
        rec["client_itl_mean_ms"] = (
            float(decode_ms[sel].sum() / gaps[sel].sum()) if sel is not None and sel.any() else math.nan
        )
        rows.append(rec)
    out.table = pd.DataFrame(rows)
    out.headline = _headline(series, out.table, run, first_token, ttft)
    return out


def _headline(
    series: ServerSeries, levels: pd.DataFrame, run: RunData, first_token: np.ndarray, ttft: np.ndarray
) -> ServerHeadline:
    f = series.frame
    info = series.info
    t = f["t_s"].to_numpy(dtype=float)
    h = ServerHeadline(samples=len(f))
    h.interval_s = float(np.median(np.diff(t))) if len(t) > 1 else math.nan
    h.kv_capacity_tokens = info.get("kv_capacity_tokens")
    h.block_size = info.get("block_size")
    h.num_blocks = info.get("num_blocks")
    everything = np.ones(len(t), dtype=bool)
    h.max_running = _max(f, "running", everything)
    h.max_waiting = _max(f, "waiting", everything)
    if "d_preemptions" in f:
        h.preemptions = float(np.nansum(f["d_preemptions"].to_numpy()))
    h.prefix_hit_rate, h.prefix_queries = _ratio_sum(f, "d_prefix_hits", "d_prefix_queries", everything)
    if "kv_cache_usage" in f and f["kv_cache_usage"].notna().any():
        h.peak_kv_usage = float(f["kv_cache_usage"].max())
        if not levels.empty and levels["peak_kv_usage"].notna().any():
            row = levels.loc[levels["peak_kv_usage"].idxmax()]
            h.peak_kv_level, h.peak_kv_target = int(row["level"]), float(row["target"])
    if not levels.empty:
        waited = levels[levels["max_waiting"] > 0]
        h.waiting_levels = [int(v) for v in waited["level"]]
        if len(waited):
            h.first_waiting_level = int(waited["level"].iat[0])
            h.first_waiting_target = float(waited["target"].iat[0])
    if len(t) >= 2:
        span = _span_mask(t, float(t[0]), float(t[-1]))
        server_s, h.server_requests = _ratio_sum(f, "d_ttft_sum", "d_ttft_count", span)
        h.server_ttft_mean_ms = server_s * 1000.0
        h.client_ttft_mean_ms, h.client_requests = _client_mean(ttft, first_token, float(t[0]), float(t[-1]))
    cost = info.get("cost") or {}
    if cost.get("cpu_ms_mean") is not None:
        h.sampler_cpu_ms = float(cost["cpu_ms_mean"])
    elif "cpu_ms" in f:
        h.sampler_cpu_ms = float(f["cpu_ms"].mean())
    return h


def foreign_requests(h: ServerHeadline) -> float:
    """Requests the server saw beyond the client's own (other clients on the same server); 0 when within margin."""
    if not (math.isfinite(h.server_requests) and h.server_requests > 0):
        return 0.0
    extra = h.server_requests - h.client_requests
    return extra if extra > FOREIGN_MARGIN * h.client_requests + 2 else 0.0
