"""Per-level summary of a run and its headline numbers, with how sure each one is. Computing only: `analysis.pipeline`
assembles it with the client's health, the server's view and the observations.

Per level (rows of levels.csv; `end_s` is when the level stopped starting requests, before any drain):

- outcomes (`vlab.core.metrics.outcomes`): every request of the level is ok, failed, cut off or rate limited;
  error_rate = failed / (ok + failed); cut-off requests are never failures, never against an SLO.
- window W = [steady_start_s, end_s − cooldown_s]: steady_start_s is the later of start_s + warmup_s and, with
  `load.steady_state: auto`, the send time of the first request after the start-up transient that MSER-5 finds in
  the level's TTFT and E2E (`vlab.core.stats.steady_state_start`).
- measured requests = successful requests of the level sent inside W. Their per-request distributions (the record
  columns that declare `summarize`, `vlab.core.records`) and the pooled ITL gaps of their token events are
  summarized with `vlab.core.metrics.summarize`; p50/p90/p99 of TTFT, ITL, TPOT and E2E get 95% confidence
  intervals (`vlab.core.stats.quantile_ci`; ITL resamples whole requests).
- throughput over W = output tokens received inside W / |W| (token events of tokens.csv at their arrival times,
  whatever level sent them: what the server delivered then), with a 95% interval from the per-second token counts;
  without tokens.csv, request spans are prorated (`vlab.core.metrics.tokens_in_window`). req/s = successful
  requests that ended inside W / |W|.
- goodput: requests of the level sent inside W that were not cut off; those that succeeded and meet every SLO
  (`meets_slo`) → goodput req/s = meeting / |W| and slo_fraction = meeting / those requests.
- token checks over measured requests: prompt mismatch, completion mismatch (early stops), multi-token events.
- open loop: achieved arrival rate = arrivals due inside W / |W| (due = t_start_s − queue_wait_ms/1000); an
  arrival waited for a slot only when every slot was busy (`waited_for_slot`); the other arrivals' send lateness is
  the generator's dispatch lag (p50/p99/max, ms). Schedule lag p50/p99/max = the `schedule_lag_ms` (send − scheduled
  arrival; a trace replay: − the row's recorded time ÷ speed) of every request the level sent, window or not: a
  replay's fidelity is judged over all its rows.
- input tok/s = prompt tokens (server usage, else requested) of the successful requests that ended inside W / |W|:
  the throughput of an embeddings workload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import RunData, TokenPass, token_pass
from vlab.core.metrics import Outcome, error_rate, goodput, meets_slo, outcomes, summarize, tokens_in_window
from vlab.core.records import SUMMARIZED
from vlab.core.stats import MIN_SAMPLES, Interval, distinguishable, mean_ci, quantile_ci, steady_state_start

METRICS: dict[str, tuple[str, str]] = {
    **{name.removesuffix("_ms"): (col.label, col.unit) for name, col in SUMMARIZED.items()},
    "itl": ("ITL (pooled gaps)", "ms"),
}
"""Summarized distribution key → (label, unit): the records' declared ones, plus the pooled ITL gaps."""
CI_METRICS: tuple[str, ...] = ("ttft", "itl", "tpot", "e2e")
CI_QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
STATS: tuple[str, ...] = ("n", "mean", "std", "p50", "p90", "p95", "p99", "p999", "min", "max")
KNEE_THROUGHPUT_GAIN = 0.10
"""Knee: the next level adds less than this relative output throughput …"""
KNEE_LATENCY_GROWTH = 0.50
"""… while its p50 TTFT or p50 E2E grows by more than this."""
SLO_ATTAINMENT = 0.90
"""A level meets the SLOs when at least this fraction of its requests meet every objective."""


@dataclass
class LevelStats:
    """What the plots need beyond the table: the pooled ITL gaps and TTFT values of one level's measured requests."""

    gaps_ms: np.ndarray
    ttft_ms: np.ndarray


@dataclass
class Headline:
    """The run in a few numbers, each with whether the data supports it (`*_supported`) and on how many requests."""

    max_output_tps: float = math.nan
    max_output_tps_level: int | None = None
    max_output_tps_target: float | None = None
    max_output_tps_n: int = 0
    max_output_tps_distinct: bool = False
    """Its interval does not overlap the next best level's: the maximum is where it says."""
    knee_level: int | None = None
    knee_target: float | None = None
    knee_supported: bool = True
    """False when a comparison the knee rests on had too few requests or overlapping intervals."""
    slo_set: bool = False
    best_slo_level: int | None = None
    best_slo_target: float | None = None
    best_slo_goodput_rps: float = math.nan
    best_slo_fraction: float = math.nan
    best_slo_n: int = 0


@dataclass
class RunSummary:
    """Everything the report shows about one run (filled by `analysis.pipeline.analyze`)."""

    run: RunData
    table: pd.DataFrame
    """One row per level (see the module docstring for the columns)."""
    errors: pd.DataFrame
    """Failed requests (cut off and rate limited included, by kind): level, target, error_kind, count, example."""
    headline: Headline
    per_level: dict[int, LevelStats] = field(default_factory=dict)
    tokens: TokenPass | None = None
    observations: list[str] = field(default_factory=list)
    server: Any = None
    """The server's /metrics view (`analysis.server_metrics.ServerSummary`)."""
    gpu: dict[str, Any] = field(default_factory=dict)
    """GPU telemetry and the physical limit: the `gpu.html.j2` variables (`analysis.gpu.gpu_context`)."""


def _steady_start(run: RunData, req: pd.DataFrame, in_level: np.ndarray, ok: np.ndarray, lo: float, hi: float) -> float:
    """The send time where the level's steady state begins (≥ lo); lo when none is detected or it is switched off."""
    if run.load_config.steady_state == "off":
        return lo
    start = req["t_start_s"].to_numpy()
    sel = np.flatnonzero(in_level & ok & (start >= lo) & (start <= hi))
    if sel.size < 20:
        return lo
    sel = sel[np.argsort(start[sel], kind="stable")]
    cut = max(
        steady_state_start(req["ttft_ms"].to_numpy()[sel]),
        steady_state_start(req["e2e_ms"].to_numpy()[sel]),
    )
    return float(start[sel[cut]]) if 0 < cut < sel.size else lo


def summarize_levels(run: RunData) -> tuple[pd.DataFrame, dict[int, LevelStats], TokenPass]:
    """The per-level table (module docstring), the plots' per-level values, and the token pass it used."""
    req = run.requests
    level_col = req["level"].to_numpy()
    ok = req["ok"].to_numpy()
    kind = outcomes(ok, req["error_kind"].astype(str).to_numpy())
    start = req["t_start_s"].to_numpy()
    end = req["end_s"].to_numpy()
    completion = req["completion_tokens"].to_numpy()
    out_tokens = np.where(completion >= 0, completion, req["n_events"].to_numpy()).astype(np.float64)
    prompt = req["prompt_tokens"].to_numpy()
    prompt_req = req["prompt_tokens_requested"].to_numpy()
    cols = {name.removesuffix("_ms"): req[name].to_numpy(dtype=float) for name in SUMMARIZED}
    slo = run.slo
    slo_ok = ok & meets_slo(
        cols["ttft"], cols["itl_mean"], cols["tpot"], cols["e2e"],
        ttft_max=slo.get("ttft_ms"), itl_max=slo.get("itl_ms"), tpot_max=slo.get("tpot_ms"), e2e_max=slo.get("e2e_ms"),
    )  # fmt: skip

    windows: dict[int, tuple[float, float, float]] = {}
    group = np.full(len(req), -1, dtype=np.int64)
    for row in run.levels.itertuples(index=False):
        lv = int(row.level)
        lo, hi = float(row.start_s) + run.warmup_s, float(row.end_s) - run.cooldown_s
        steady = _steady_start(run, req, level_col == lv, ok, lo, hi)
        windows[lv] = (lo, steady, hi)
        group[ok & (level_col == lv) & (start >= steady) & (start <= hi)] = lv
    tokens = token_pass(run, group)

    rows: list[dict[str, Any]] = []
    per_level: dict[int, LevelStats] = {}
    for row in run.levels.itertuples(index=False):
        lv = int(row.level)
        lo, steady, hi = windows[lv]
        in_level = level_col == lv
        measured = group == lv
        in_window = in_level & (start >= steady) & (start <= hi)
        span = max(hi - steady, 0.0)
        rec: dict[str, Any] = {
            "level": lv, "target": float(row.target), "start_s": float(row.start_s), "end_s": float(row.end_s),
            "ended_by": str(row.ended_by or ""), "window_start_s": steady, "window_end_s": hi,
            "warmup_end_s": lo, "steady_cut_s": steady - lo, "window_s": span,
            "n_sent": int(in_level.sum()), "n_measured": int(measured.sum()),
            "n_ok": int((in_level & (kind == Outcome.OK)).sum()),
            "n_failed": int((in_level & (kind == Outcome.FAILED)).sum()),
            "n_cut_off": int((in_level & (kind == Outcome.CUT_OFF)).sum()),
            "n_rate_limited": int((in_level & (kind == Outcome.RATE_LIMITED)).sum()),
        }  # fmt: skip
        rec["error_rate"] = error_rate(rec["n_failed"], rec["n_ok"])
        ends_in = ok & (end >= steady) & (end <= hi)
        rec["n_completed"] = int(ends_in.sum())
        if run.tokens_path is not None:
            received = tokens.tokens_between(steady, hi)
            per_second = tokens.per_second(steady, hi)
        else:
            first = start + cols["ttft"] / 1000.0
            received = tokens_in_window(first, end, np.where(ok, out_tokens, np.nan), (steady, hi))
            per_second = np.empty(0)
        rate = received / span if span > 0 else math.nan
        # the interval's width from the whole seconds' spread (batch means), centred on the window's own rate
        half = mean_ci(per_second).half_width if per_second.size >= 5 else math.nan
        ci = Interval(rate, rate - half, rate + half)
        prompt_tokens = np.where(prompt >= 0, prompt, np.where(prompt_req >= 0, prompt_req, np.nan)).astype(float)
        rec.update(
            output_tok_per_s=rate, output_tok_per_s_lo=ci.lo, output_tok_per_s_hi=ci.hi,
            req_per_s=rec["n_completed"] / span if span > 0 else math.nan,
            total_tok_per_s=(received + float(np.nansum(prompt_tokens[ends_in]))) / span if span > 0 else math.nan,
            input_tok_per_s=float(np.nansum(prompt_tokens[ends_in])) / span if span > 0 else math.nan,
        )  # fmt: skip
        pool = in_window & (kind != Outcome.CUT_OFF)
        good_rps, good_frac = goodput(int((slo_ok & in_window).sum()), int(pool.sum()), span)
        rec.update(goodput_req_per_s=good_rps, slo_fraction=good_frac, slo_n=int(pool.sum()))
        pm = measured & (prompt_req >= 0) & (prompt >= 0) & (prompt != prompt_req)
        cm = measured & (completion >= 0) & (completion != req["max_tokens"].to_numpy())
        rec.update(
            prompt_mismatch=int(pm.sum()),
            completion_mismatch=int(cm.sum()),
            multi_token=int((measured & req["multi_token"].to_numpy()).sum()),
        )
        if run.open_loop:
            rec.update(_open_loop(req, in_level, cols["queue_wait"], steady, hi, float(row.target)))
        level_gaps = tokens.gaps.get(lv, np.empty(0, dtype=np.float32))
        for metric in METRICS:
            values = level_gaps if metric == "itl" else cols[metric][measured]
            rec.update(summarize(values).as_dict(prefix=f"{metric}_"))
            if metric in CI_METRICS:
                groups = tokens.gap_rows.get(lv) if metric == "itl" else None
                for stat, q in CI_QUANTILES:
                    interval = quantile_ci(values, q, groups=groups)
                    rec[f"{metric}_{stat}_lo"], rec[f"{metric}_{stat}_hi"] = interval.lo, interval.hi
        first_chunk = req["first_chunk_ms"].to_numpy(dtype=float)[measured]
        rec.update(summarize(first_chunk).as_dict(prefix="first_chunk_"))
        rows.append(rec)
        per_level[lv] = LevelStats(gaps_ms=level_gaps, ttft_ms=cols["ttft"][measured])
    return pd.DataFrame(rows), per_level, tokens


def _open_loop(
    req: pd.DataFrame, in_level: np.ndarray, queue_wait: np.ndarray, lo: float, hi: float, target: float
) -> dict[str, Any]:
    """Achieved arrival rate, real slot waits and the generator's dispatch lag (module docstring)."""
    due = req["t_start_s"].to_numpy() - queue_wait / 1000.0
    arrived = in_level & (due >= lo) & (due <= hi)
    waited = arrived & req["waited_for_slot"].to_numpy()
    lag = summarize(queue_wait[arrived & ~waited])
    schedule = summarize(req["schedule_lag_ms"].to_numpy(dtype=float)[in_level])
    n = int(arrived.sum())
    span = hi - lo
    return {
        "target_rate": target,
        "achieved_rate": n / span if span > 0 else math.nan,
        "n_arrivals": n,
        "n_waited": int(waited.sum()),
        "waited_fraction": int(waited.sum()) / n if n else math.nan,
        "dispatch_lag_p50_ms": lag.p50,
        "dispatch_lag_p99_ms": lag.p99,
        "dispatch_lag_max_ms": lag.max,
        "schedule_lag_all_n": schedule.n,
        "schedule_lag_all_p50_ms": schedule.p50,
        "schedule_lag_all_p99_ms": schedule.p99,
        "schedule_lag_all_max_ms": schedule.max,
    }


def errors_table(run: RunData) -> pd.DataFrame:
    """Requests that did not succeed, by level and kind: count and the most common message (raw text: escape it)."""
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


# --------------------------------------------------------------------------------------------------- headline
def interval(row: Any, metric: str, stat: str = "p50") -> Interval:
    """A level's estimate of `metric_stat` and its interval (output tok/s has one too)."""
    if metric == "output_tok_per_s":
        return Interval(float(row["output_tok_per_s"]), float(row["output_tok_per_s_lo"]),
                        float(row["output_tok_per_s_hi"]))  # fmt: skip
    key = f"{metric}_{stat}"
    return Interval(float(row[key]), float(row.get(f"{key}_lo", math.nan)), float(row.get(f"{key}_hi", math.nan)))


def enough(row: Any) -> bool:
    """A level with at least MIN_SAMPLES measured requests."""
    return int(row["n_measured"]) >= MIN_SAMPLES


def find_knee(table: pd.DataFrame) -> tuple[int | None, bool]:
    """(row position of the knee level or None, whether the data supports the answer).

    Walking the levels in order of target, the knee is the first level i whose next level raises output tok/s by
    less than KNEE_THROUGHPUT_GAIN (10 %) while its p50 TTFT or p50 E2E grows by more than KNEE_LATENCY_GROWTH (50 %)
    — and that growth is real (the two levels' intervals do not overlap). A comparison between levels with fewer
    than MIN_SAMPLES measured requests is not supported: then no knee is named. "No knee" is supported only when at
    least two levels were compared and every compared pair had enough requests.
    """
    t = table[table["n_measured"] > 0].sort_values("target", kind="stable")
    supported = t["target"].nunique() >= 2
    for i in range(len(t) - 1):
        a, b = t.iloc[i], t.iloc[i + 1]
        if a["target"] == b["target"]:
            continue
        if not (enough(a) and enough(b)):
            supported = False
        tps_a, tps_b = float(a["output_tok_per_s"]), float(b["output_tok_per_s"])
        if not (np.isfinite(tps_a) and tps_a > 0 and np.isfinite(tps_b)):
            continue
        gain = tps_b / tps_a - 1.0
        grows = [
            m for m in ("ttft", "e2e")
            if _growth(float(a[f"{m}_p50"]), float(b[f"{m}_p50"])) > KNEE_LATENCY_GROWTH
        ]  # fmt: skip
        if gain < KNEE_THROUGHPUT_GAIN and grows:
            if not (enough(a) and enough(b)):
                supported = False
                continue
            if any(distinguishable(interval(a, m), interval(b, m)) for m in grows):
                return int(table.index.get_loc(t.index[i])), True
            supported = False
    return None, supported


def _growth(a: float, b: float) -> float:
    return b / a - 1.0 if np.isfinite(a) and np.isfinite(b) and a > 0 else -math.inf


def headline(table: pd.DataFrame, slo_set: bool) -> Headline:
    """Max output throughput, the knee and the highest level meeting the SLOs (≥ SLO_ATTAINMENT of its requests,
    with at least MIN_SAMPLES of them), each with its support."""
    h = Headline(slo_set=slo_set)
    if table.empty:
        return h
    tps = table["output_tok_per_s"].to_numpy(dtype=float)
    if np.isfinite(tps).any():
        order = np.argsort(-np.nan_to_num(tps, nan=-np.inf))
        i = int(order[0])
        row = table.iloc[i]
        h.max_output_tps = float(tps[i])
        h.max_output_tps_level = int(row["level"])
        h.max_output_tps_target = float(row["target"])
        h.max_output_tps_n = int(row["n_measured"])
        others = [table.iloc[int(j)] for j in order[1:] if np.isfinite(tps[int(j)])]
        h.max_output_tps_distinct = enough(row) and all(
            distinguishable(interval(row, "output_tok_per_s"), interval(o, "output_tok_per_s")) for o in others[:1]
        )
    knee, h.knee_supported = find_knee(table)
    if knee is not None:
        h.knee_level = int(table["level"].iat[knee])
        h.knee_target = float(table["target"].iat[knee])
    if slo_set:
        frac = table["slo_fraction"].to_numpy(dtype=float)
        meeting = np.flatnonzero((frac >= SLO_ATTAINMENT) & (table["slo_n"].to_numpy() >= MIN_SAMPLES))
        if meeting.size:
            best = int(meeting[np.argmax(table["target"].to_numpy()[meeting])])
            h.best_slo_level = int(table["level"].iat[best])
            h.best_slo_target = float(table["target"].iat[best])
            h.best_slo_goodput_rps = float(table["goodput_req_per_s"].iat[best])
            h.best_slo_fraction = float(frac[best])
            h.best_slo_n = int(table["slo_n"].iat[best])
    return h
