"""Per-level summary of a run, headline numbers and the knee. Metric formulas come from `vlab.core.metrics`.

Per level (rows of levels.csv), with the measurement window W = [start_s + warmup_s, end_s − cooldown_s] (Unix s):

- measured requests = successful requests whose `t_start_s` is in W. Their TTFT, E2E, TPOT, per-request mean ITL
  (`itl_mean_ms`), queue wait, and the pooled ITL gaps of their token events (tokens.csv) are summarized with
  `vlab.core.metrics.summarize` (n, mean, std, p50, p90, p95, p99, p99.9, min, max; all in ms).
- throughput = `vlab.core.metrics.throughput` over the successful requests whose end (t_start_s + e2e_ms/1000) is in W:
  output tok/s, total tok/s, req/s. Output tokens are `completion_tokens`, or `n_events` when the server sent no
  usage (−1); prompt tokens are `prompt_tokens`, or `prompt_tokens_requested` when unknown.
- goodput: among all requests (ok or failed) ending in W, those that succeeded and `meets_slo` every objective set;
  `vlab.core.metrics.goodput` → (req/s, fraction). Without an SLO every success counts.
- errors: failed requests sent during the whole level (warm-up and cool-down included, so nothing is hidden), by
  `error_kind`; error_rate = failed / all requests sent in the level.
- token checks over measured requests: prompt mismatch (prompt_tokens_requested ≥ 0, prompt_tokens ≥ 0 and
  prompt_tokens ≠ prompt_tokens_requested), completion mismatch (completion_tokens ≥ 0 and ≠ max_tokens),
  multi_token count.
- open loop only: target rate, achieved arrival rate = requests whose scheduled arrival (t_start_s −
  queue_wait_ms/1000) is in W, divided by |W|; arrivals that waited = those with queue_wait_ms > 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import RunData, pooled_gaps
from vlab.core.metrics import goodput, meets_slo, summarize, throughput

LATENCY_METRICS: dict[str, str] = {
    "ttft": "TTFT",
    "e2e": "E2E",
    "tpot": "TPOT",
    "itl": "ITL (pooled gaps)",
    "itl_mean": "ITL (per-request mean)",
    "queue_wait": "Queue wait",
    "retrieval": "Retrieval (RAG, before the request)",
}
TOKEN_METRICS: dict[str, str] = {"prompt_tokens": "Prompt tokens (server usage)"}
"""Distributions in tokens, reported per level like the latencies."""
STATS: tuple[str, ...] = ("n", "mean", "std", "p50", "p90", "p95", "p99", "p999", "min", "max")
KNEE_THROUGHPUT_GAIN = 0.10
"""Knee: the next level adds less than this relative output throughput …"""
KNEE_LATENCY_GROWTH = 0.50
"""… while its p50 TTFT or p50 E2E grows by more than this."""
SLO_ATTAINMENT = 0.90
"""A level meets the SLOs when at least this fraction of its requests meet every objective."""
WAIT_THRESHOLD_MS = 1.0


@dataclass
class LevelStats:
    """The pooled ITL gaps and TTFT values of one level, kept for the plots (not written to summary files)."""

    gaps_ms: np.ndarray
    ttft_ms: np.ndarray


@dataclass
class Headline:
    """The run in four numbers; levels are given by index and target."""

    max_output_tps: float = math.nan
    max_output_tps_level: int | None = None
    max_output_tps_target: float | None = None
    knee_level: int | None = None
    knee_target: float | None = None
    slo_set: bool = False
    best_slo_level: int | None = None
    best_slo_target: float | None = None
    best_slo_goodput_rps: float = math.nan
    best_slo_fraction: float = math.nan


@dataclass
class RunSummary:
    """Everything the report shows about one run."""

    run: RunData
    table: pd.DataFrame
    """One row per level; columns listed in `summary_columns`."""
    errors: pd.DataFrame
    """Failed requests: one row per (level, error_kind) with count and the most common message."""
    headline: Headline
    per_level: dict[int, LevelStats] = field(default_factory=dict)
    observations: list[str] = field(default_factory=list)
    server: Any = None
    """The server's /metrics view (`analysis.server_metrics.ServerSummary`), set by `summarize_run`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run.path),
            "label": self.run.label,
            "status": self.run.meta.get("status"),
            "open_loop": self.run.open_loop,
            "warmup_s": self.run.warmup_s,
            "cooldown_s": self.run.cooldown_s,
            "slo": self.run.slo,
            "headline": _clean(asdict(self.headline)),
            "observations": self.observations,
            "levels": [_clean(r) for r in self.table.to_dict(orient="records")],
            "errors": [_clean(r) for r in self.errors.to_dict(orient="records")],
            "server_metrics": _clean(self.server.to_json()) if self.server is not None else None,
        }


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _level_windows(run: RunData) -> pd.DataFrame:
    lv = run.levels.copy()
    lv["window_start_s"] = lv["start_s"] + run.warmup_s
    lv["window_end_s"] = lv["end_s"] - run.cooldown_s
    return lv


def summarize_run(run: RunData) -> RunSummary:
    """Compute the per-level table, errors, headline and pooled gaps of one loaded run."""
    req = run.requests
    levels = _level_windows(run)
    level_col = req["level"].to_numpy()
    ok = req["ok"].to_numpy()
    start = req["t_start_s"].to_numpy()
    end = req["end_s"].to_numpy()
    completion = req["completion_tokens"].to_numpy()
    out_tokens = np.where(completion >= 0, completion, req["n_events"].to_numpy()).astype(np.float64)
    prompt = req["prompt_tokens"].to_numpy()
    prompt_req = req["prompt_tokens_requested"].to_numpy()
    prompt_tokens = np.where(prompt >= 0, prompt, np.where(prompt_req >= 0, prompt_req, np.nan)).astype(np.float64)
    cols = {m: req[f"{m}_ms"].to_numpy() for m in ("ttft", "e2e", "tpot", "itl_mean", "queue_wait", "retrieval")}
    slo = run.slo
    slo_ok = ok & meets_slo(
        cols["ttft"],
        cols["itl_mean"],
        cols["tpot"],
        cols["e2e"],
        ttft_max=slo.get("ttft_ms"),
        itl_max=slo.get("itl_ms"),
        tpot_max=slo.get("tpot_ms"),
        e2e_max=slo.get("e2e_ms"),
    )

    group = np.full(len(req), -1, dtype=np.int64)
    masks: dict[int, np.ndarray] = {}
    for row in levels.itertuples(index=False):
        lv = int(row.level)
        measured = ok & (level_col == lv) & (start >= row.window_start_s) & (start <= row.window_end_s)
        masks[lv] = measured
        group[measured] = lv
    gaps = pooled_gaps(run, group)

    rows: list[dict[str, Any]] = []
    per_level: dict[int, LevelStats] = {}
    for row in levels.itertuples(index=False):
        lv = int(row.level)
        measured = masks[lv]
        window = (float(row.window_start_s), float(row.window_end_s))
        in_level = level_col == lv
        rec: dict[str, Any] = {
            "level": lv,
            "target": float(row.target),
            "start_s": float(row.start_s),
            "end_s": float(row.end_s),
            "window_start_s": window[0],
            "window_end_s": window[1],
            "n_sent": int(in_level.sum()),
            "n_measured": int(measured.sum()),
        }
        ends_in = (end >= window[0]) & (end <= window[1])
        done = ok & ends_in
        tp = throughput(end[done], out_tokens[done], prompt_tokens[done], window)
        rec.update(
            window_s=tp.window_s,
            n_completed=int(done.sum()),
            req_per_s=tp.requests_per_s,
            output_tok_per_s=tp.output_tokens_per_s,
            total_tok_per_s=tp.total_tokens_per_s,
        )
        n_meeting = int((slo_ok & ends_in).sum())
        n_ending = int(ends_in.sum())
        good_rps, good_frac = goodput(n_meeting, n_ending, tp.window_s)
        rec.update(goodput_req_per_s=good_rps, slo_fraction=good_frac)
        failed = in_level & ~ok
        rec.update(n_failed=int(failed.sum()), error_rate=float(failed.sum() / max(int(in_level.sum()), 1)))
        pm = measured & (prompt_req >= 0) & (prompt >= 0) & (prompt != prompt_req)
        cm = measured & (completion >= 0) & (completion != req["max_tokens"].to_numpy())
        rec.update(
            prompt_mismatch=int(pm.sum()),
            completion_mismatch=int(cm.sum()),
            multi_token=int((measured & req["multi_token"].to_numpy()).sum()),
        )
        if run.open_loop:
            arrival = start - cols["queue_wait"] / 1000.0
            arrived = in_level & (arrival >= window[0]) & (arrival <= window[1])
            n_arr = int(arrived.sum())
            waited = int((arrived & (cols["queue_wait"] > WAIT_THRESHOLD_MS)).sum())
            rec.update(
                target_rate=float(row.target),
                achieved_rate=n_arr / tp.window_s if tp.window_s > 0 else math.nan,
                n_arrivals=n_arr,
                n_waited=waited,
                waited_fraction=waited / n_arr if n_arr else math.nan,
            )
        level_gaps = gaps.get(lv, np.empty(0, dtype=np.float32))
        for metric in LATENCY_METRICS:
            values = level_gaps if metric == "itl" else cols[metric][measured]
            rec.update(summarize(values).as_dict(prefix=f"{metric}_"))
        rec.update(summarize(prompt_tokens[measured]).as_dict(prefix="prompt_tokens_"))
        rows.append(rec)
        per_level[lv] = LevelStats(gaps_ms=level_gaps, ttft_ms=cols["ttft"][measured])
    from analysis.client_monitor import attach

    table = attach(pd.DataFrame(rows), run.path)
    errors = _errors(run)
    summary = RunSummary(run, table, errors, headline(table, bool(slo)), per_level)
    # server side (vLLM /metrics samples), aligned with the levels above; see analysis.server_metrics
    from analysis.server_metrics import summarize_server

    summary.server = summarize_server(run, table)
    from analysis.observations import observe

    summary.observations = observe(summary)
    return summary


def _errors(run: RunData) -> pd.DataFrame:
    """Failed requests by level and kind: count and the most common message (raw text: escape when shown)."""
    failed = run.requests.loc[~run.requests["ok"], ["level", "level_target", "error_kind", "error"]]
    if failed.empty:
        return pd.DataFrame(columns=["level", "target", "error_kind", "count", "example"])
    failed = failed.assign(error_kind=failed["error_kind"].astype(str), error=failed["error"].astype(str))
    grouped = failed.groupby(["level", "error_kind"], sort=True, observed=True)
    out = grouped.agg(
        target=("level_target", "first"),
        count=("error", "size"),
        example=("error", lambda s: s.value_counts().index[0] if len(s) else ""),
    ).reset_index()
    return out[["level", "target", "error_kind", "count", "example"]]


def find_knee(table: pd.DataFrame) -> int | None:
    """Index (row position) of the knee level, or None.

    Walking the levels in order, the knee is the first level i whose next level i+1 raises output tok/s by less
    than KNEE_THROUGHPUT_GAIN (10 %) while its p50 TTFT or p50 E2E grows by more than KNEE_LATENCY_GROWTH (50 %):
    beyond it, more load buys latency, not throughput.
    """
    tps = table["output_tok_per_s"].to_numpy(dtype=float)
    ttft = table["ttft_p50"].to_numpy(dtype=float)
    e2e = table["e2e_p50"].to_numpy(dtype=float)
    for i in range(len(table) - 1):
        if not (np.isfinite(tps[i]) and tps[i] > 0 and np.isfinite(tps[i + 1])):
            continue
        gain = tps[i + 1] / tps[i] - 1.0
        grow = max(_growth(ttft[i], ttft[i + 1]), _growth(e2e[i], e2e[i + 1]))
        if gain < KNEE_THROUGHPUT_GAIN and grow > KNEE_LATENCY_GROWTH:
            return i
    return None


def _growth(a: float, b: float) -> float:
    return b / a - 1.0 if np.isfinite(a) and np.isfinite(b) and a > 0 else -math.inf


def headline(table: pd.DataFrame, slo_set: bool) -> Headline:
    """Max output throughput, the knee and the highest level meeting the SLOs (≥ SLO_ATTAINMENT of requests)."""
    h = Headline(slo_set=slo_set)
    if table.empty:
        return h
    tps = table["output_tok_per_s"].to_numpy(dtype=float)
    if np.isfinite(tps).any():
        i = int(np.nanargmax(tps))
        h.max_output_tps = float(tps[i])
        h.max_output_tps_level = int(table["level"].iat[i])
        h.max_output_tps_target = float(table["target"].iat[i])
    knee = find_knee(table)
    if knee is not None:
        h.knee_level = int(table["level"].iat[knee])
        h.knee_target = float(table["target"].iat[knee])
    if slo_set:
        frac = table["slo_fraction"].to_numpy(dtype=float)
        meeting = np.flatnonzero(frac >= SLO_ATTAINMENT)
        if meeting.size:
            best = int(meeting[np.argmax(table["target"].to_numpy()[meeting])])
            h.best_slo_level = int(table["level"].iat[best])
            h.best_slo_target = float(table["target"].iat[best])
            h.best_slo_goodput_rps = float(table["goodput_req_per_s"].iat[best])
            h.best_slo_fraction = float(frac[best])
    return h


def write_summary_files(summary: RunSummary, folder: Any) -> None:
    """summary.csv (one row per level) and summary.json (headline, observations, levels, errors) in `folder`."""
    import json
    from pathlib import Path

    folder = Path(folder)
    summary.table.to_csv(folder / "summary.csv", index=False, float_format="%.6g", lineterminator="\n")
    (folder / "summary.json").write_text(json.dumps(_clean(summary.to_json()), indent=2) + "\n")
