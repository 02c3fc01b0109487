"""The per-level numbers that decisions are made on: the regression gate (`analysis.gate`), the repeats summary
(`analysis.repeats`) and the Pareto view (`analysis.pareto`) all name a level's numbers here, each with its unit,
which way is better, and the 95% interval one run gives it (its *within-run* interval).

- `ttft_p50` … `e2e_p99` (`ttft`, `itl`, `tpot`, `e2e` × `p50`, `p90`, `p99`): that percentile of the level's
  measured requests, ms; within-run interval: the table's `_lo`/`_hi` (`vlab.core.stats.quantile_ci`; ITL resamples
  whole requests).
- `ttft_mean`, `tpot_mean`, `e2e_mean`: the mean over the measured requests, ms; mean ± 1.96·std/√n.
- `output_tok_s`: output tokens received in the window / its length, tok/s; the table's `output_tok_per_s_lo`/`_hi`.
- `per_user_tok_s`: 1000 / `tpot_mean`, the output speed one request sees after its first token, tok/s; 1000 / the
  ends of `tpot_mean`'s interval.
- `req_s`: requests that ended in the window / its length, req/s; counts, (k ± 1.96·√k) / window (Poisson), and
  [0, 3.69 / window] for k = 0.
- `goodput_req_s`: requests meeting every SLO / the window's length, req/s; the same, k = those requests.
- `error_rate`: failed / (ok + failed) over the whole level; Wilson score (`vlab.core.stats.proportion_ci`).
- `slo_fraction`: requests meeting every SLO / requests in the window not cut off; Wilson score.

A value that a level does not have (no measured request, no SLO set) is NaN; an interval that one run cannot give
(fewer than 2 values) has NaN ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from analysis.summary import RunSummary
from vlab.core.stats import NAN_INTERVAL, Interval, Z, proportion_ci

Row = Mapping[str, Any]
POISSON_ZERO_UPPER = 3.689
"""−ln(0.025): the exact 97.5% upper bound of a Poisson mean after observing 0 events."""


@dataclass(frozen=True)
class LevelMetric:
    """One number of a level, how to read it with its within-run interval, and which way is better."""

    name: str
    label: str
    unit: str
    better: Literal["lower", "higher"]
    read: Callable[[Row], Interval]

    def value(self, row: Row) -> Interval:
        return self.read(row)


def _f(row: Row, key: str) -> float:
    try:
        value = float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan
    return value


def _columns(key: str) -> Callable[[Row], Interval]:
    return lambda row: Interval(_f(row, key), _f(row, f"{key}_lo"), _f(row, f"{key}_hi"))


def _mean(metric: str) -> Callable[[Row], Interval]:
    def read(row: Row) -> Interval:
        mean, std, n = _f(row, f"{metric}_mean"), _f(row, f"{metric}_std"), _f(row, f"{metric}_n")
        if not (math.isfinite(n) and n >= 2 and math.isfinite(std)):
            return Interval(mean, math.nan, math.nan)
        half = Z * std / math.sqrt(n)
        return Interval(mean, mean - half, mean + half)

    return read


def _per_user(row: Row) -> Interval:
    tpot = _mean("tpot")(row)

    def inv(ms: float) -> float:
        return 1000.0 / ms if math.isfinite(ms) and ms > 0 else math.nan

    return Interval(inv(tpot.value), inv(tpot.hi), inv(tpot.lo))


def _count_rate(rate_key: str) -> Callable[[Row], Interval]:
    def read(row: Row) -> Interval:
        rate, span = _f(row, rate_key), _f(row, "window_s")
        if not (math.isfinite(rate) and math.isfinite(span) and span > 0):
            return Interval(rate, math.nan, math.nan)
        k = rate * span
        if k <= 0:
            return Interval(rate, 0.0, POISSON_ZERO_UPPER / span)
        half = Z * math.sqrt(k)
        return Interval(rate, max(0.0, k - half) / span, (k + half) / span)

    return read


def _error_rate(row: Row) -> Interval:
    failed, ok = _f(row, "n_failed"), _f(row, "n_ok")
    if not (math.isfinite(failed) and math.isfinite(ok)) or failed + ok <= 0:
        return NAN_INTERVAL
    return proportion_ci(int(failed), int(failed + ok))


def _slo_fraction(row: Row) -> Interval:
    fraction, n = _f(row, "slo_fraction"), _f(row, "slo_n")
    if not (math.isfinite(fraction) and math.isfinite(n)) or n <= 0:
        return NAN_INTERVAL
    return proportion_ci(round(fraction * n), int(n))


def _registry() -> dict[str, LevelMetric]:
    out: dict[str, LevelMetric] = {}
    for metric, title in (("ttft", "TTFT"), ("itl", "ITL"), ("tpot", "TPOT"), ("e2e", "E2E")):
        for stat in ("p50", "p90", "p99"):
            key = f"{metric}_{stat}"
            out[key] = LevelMetric(key, f"{title} {stat}", "ms", "lower", _columns(key))
        if metric != "itl":  # the pooled gaps' mean has no per-request interval: use itl_p50 or tpot_mean
            out[f"{metric}_mean"] = LevelMetric(f"{metric}_mean", f"{title} mean", "ms", "lower", _mean(metric))
    out.update(
        {
            "output_tok_s": LevelMetric("output_tok_s", "output throughput", "tok/s", "higher",
                                        _columns("output_tok_per_s")),
            "per_user_tok_s": LevelMetric("per_user_tok_s", "output speed per request (1000 / TPOT mean)", "tok/s",
                                          "higher", _per_user),
            "req_s": LevelMetric("req_s", "requests completed", "req/s", "higher", _count_rate("req_per_s")),
            "goodput_req_s": LevelMetric("goodput_req_s", "goodput (requests meeting the SLO)", "req/s", "higher",
                                         _count_rate("goodput_req_per_s")),
            "error_rate": LevelMetric("error_rate", "error rate", "", "lower", _error_rate),
            "slo_fraction": LevelMetric("slo_fraction", "fraction meeting the SLO", "", "higher", _slo_fraction),
        }
    )  # fmt: skip
    return out


METRICS: dict[str, LevelMetric] = _registry()
"""Every metric by name, in the order tables list them."""
DEFAULT_SHOWN: tuple[str, ...] = (
    "ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "tpot_mean", "e2e_p50", "output_tok_s", "error_rate",
)  # fmt: skip
"""What `vlab compare` shows without rules, and the repeats summary's headline columns."""


def metric(name: str) -> LevelMetric:
    """The metric called `name`; a `KeyError` whose message lists the known names."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def level_rows(summary: RunSummary) -> dict[float, Row]:
    """The run's per-level rows by target (the first level of a target when a run has it twice)."""
    rows: dict[float, Row] = {}
    for rec in summary.table.to_dict(orient="records"):
        rows.setdefault(float(rec["target"]), rec)
    return rows


def shared_targets(groups: Sequence[Sequence[RunSummary]]) -> list[float]:
    """The level targets every run of every group has, in the first run's order."""
    runs = [s for group in groups for s in group]
    if not runs:
        return []
    common = set(level_rows(runs[0]))
    for s in runs[1:]:
        common &= set(level_rows(s))
    return [t for t in level_rows(runs[0]) if t in common]
