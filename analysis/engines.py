"""Observations across engines: what continuous batching and paged attention buy, from one comparison's runs.

The runs are the same scenario against the same model on different servers (`vlab experiment engines`). Each run
comes with an `EngineRun`: its label, whether it batches continuously, and its KV cache's capacity in tokens when
known. The sentences compare p50s at matching levels (closed loop, users) with their 95% intervals
(`vlab.core.stats.distinguishable`): "same" when the two intervals overlap, a ratio and a direction otherwise, and
they name the measured requests behind each value. Nothing is said about a pair of levels without finite intervals.

1. one user: continuous batching against the unbatched server (TTFT and ITL): with one request in flight there is
   nothing to batch, so any gain must come from elsewhere; and each other engine against the unbatched one.
2. scaling: output tok/s at the highest level ÷ at one user, per engine; and the batched engines' throughput at the
   highest level against the unbatched one's.
3. under load, per engine: output tok/s, TTFT and ITL p50 from one user to the highest level; throughput flat while
   TTFT grows past N/2 × means requests are served one after another (transformers serve without continuous
   batching runs one generate() at a time); throughput and ITL both up means the requests share each decode step.
4. KV cache: the tokens the highest level needs at once (users × (prompt + completion tokens, means)) against each
   engine's capacity; a cache the load never fills cannot show what paged attention saves in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.summary import interval
from vlab.core.stats import distinguishable

if TYPE_CHECKING:
    from analysis.summary import RunSummary


@dataclass(frozen=True)
class EngineRun:
    """One run of the comparison and what its server is."""

    label: str
    summary: RunSummary
    continuous_batching: bool
    kv_capacity_tokens: int | None = None
    """Tokens the server's KV cache holds (None: unknown, or a cache that grows per request)."""


@dataclass(frozen=True)
class Change:
    """b against a for one metric's p50: the ratio b/a and whether the 95% intervals separate them."""

    ratio: float
    verdict: str  # "same" (intervals overlap), "diff", or "unknown" (no finite interval)
    n_a: int
    n_b: int

    def text(self, metric: str) -> str:
        """'ITL p50 0.42x (n = 12 vs 40)', with 'no measurable change' for overlapping intervals."""
        sizes = f"n = {self.n_a} vs {self.n_b}"
        if self.verdict == "unknown":
            return f"{metric}: no interval to tell ({sizes})"
        if self.verdict == "same":
            return f"{metric} {self.ratio:.2f}x, within the 95% intervals: no measurable change ({sizes})"
        return f"{metric} {self.ratio:.2f}x ({sizes})"


def level_row(s: RunSummary, target: float) -> Any | None:
    """The run's level at closed-loop target `target` with measured requests, or None."""
    t = s.table
    match = t[(t["target"] == target) & (t["n_measured"] > 0)]
    return match.iloc[0] if len(match) else None


def change(a: Any, b: Any, metric: str) -> Change:
    """b against a for `metric`'s p50 (`ttft`, `itl`, `e2e` or `output_tok_per_s`)."""
    ia, ib = interval(a, metric), interval(b, metric)
    ratio = ib.value / ia.value if ia.value > 0 and np.isfinite(ia.value) and np.isfinite(ib.value) else math.nan
    finite = all(np.isfinite(v) for v in (ia.lo, ia.hi, ib.lo, ib.hi)) and np.isfinite(ratio)
    verdict = ("diff" if distinguishable(ia, ib) else "same") if finite else "unknown"
    return Change(ratio, verdict, int(a["n_measured"]), int(b["n_measured"]))


def common_targets(runs: list[EngineRun]) -> list[float]:
    """Level targets every run measured, ascending."""
    sets = [set(r.summary.table.loc[r.summary.table["n_measured"] > 0, "target"].astype(float)) for r in runs]
    return sorted(set.intersection(*sets)) if sets else []


def observe_engines(runs: list[EngineRun]) -> list[str]:
    """The sentences (module doc) for runs of one scenario on several engines; [] when they share no two levels."""
    if len(runs) < 2 or any(r.summary.run.open_loop for r in runs):
        return []
    targets = common_targets(runs)
    if not targets:
        return []
    low, high = targets[0], targets[-1]
    out = _at_low(runs, low)
    if high > low:
        out += _scaling(runs, low, high) + _itl_growth(runs, low, high)
    out += _kv_cache(runs, high)
    return out


def _users(target: float) -> str:
    return f"{target:g} user{'s' if target != 1 else ''}"


def _baseline(runs: list[EngineRun]) -> EngineRun | None:
    """The unbatched server, the reference for what batching buys (None when every run batches)."""
    return next((r for r in runs if not r.continuous_batching), None)


def _at_low(runs: list[EngineRun], low: float) -> list[str]:
    base = _baseline(runs)
    if base is None:
        return []
    a = level_row(base.summary, low)
    out = []
    for r in runs:
        if r is base:
            continue
        b = level_row(r.summary, low)
        ttft, itl = change(a, b, "ttft"), change(a, b, "itl")
        if ttft.verdict == "same" and itl.verdict == "same":
            verdict = "no measurable difference: with one request in flight there is no batch to gain from"
        elif ttft.verdict == "diff" or itl.verdict == "diff":
            faster = [m for m, c in (("TTFT", ttft), ("ITL", itl)) if c.verdict == "diff" and c.ratio < 1]
            slower = [m for m, c in (("TTFT", ttft), ("ITL", itl)) if c.verdict == "diff" and c.ratio > 1]
            parts = ([f"faster in {' and '.join(faster)}"] if faster else []) + (
                [f"slower in {' and '.join(slower)}"] if slower else []
            )
            cause = (
                "the engine's own kernels and scheduling, not batching"
                if r.continuous_batching
                else "the engine itself"
            )
            verdict = f"{', '.join(parts)}: with nothing to batch at {_users(low)} that is {cause}"
        else:
            verdict = "not enough data to tell them apart"
        out.append(
            f"At {_users(low)}, {r.label} against {base.label}: {ttft.text('TTFT p50')}; {itl.text('ITL p50')}: "
            f"{verdict}."
        )
    return out


def _scaling(runs: list[EngineRun], low: float, high: float) -> list[str]:
    gains = []
    for r in runs:
        a, b = level_row(r.summary, low), level_row(r.summary, high)
        gains.append(f"{r.label} {change(a, b, 'output_tok_per_s').ratio:.1f}x")
    out = [f"Output throughput from {_users(low)} to {_users(high)}: {', '.join(gains)}."]
    base = _baseline(runs)
    if base is not None:
        a = level_row(base.summary, high)
        for r in runs:
            if r is base or not r.continuous_batching:
                continue
            c = change(a, level_row(r.summary, high), "output_tok_per_s")
            if c.verdict == "diff":
                what = f"{c.ratio:.1f}x the output tok/s of {base.label}"
            elif c.verdict == "same":
                what = f"no measurable throughput gain over {base.label} ({c.ratio:.2f}x, intervals overlap)"
            else:
                what = f"{c.ratio:.2f}x the output tok/s of {base.label} (no interval to tell)"
            out.append(f"At {_users(high)}, {r.label}'s continuous batching buys {what} (n = {c.n_a} vs {c.n_b}).")
    return out


def _itl_growth(runs: list[EngineRun], low: float, high: float) -> list[str]:
    """Per engine, output tok/s, TTFT and ITL p50 from `low` to `high` users, and what they say about its scheduling:
    throughput flat (ratio < 1.5 or within the intervals) while TTFT grows past half of high/low = requests served one
    after another (they queue); throughput up with ITL up = they share each decode step."""
    out = []
    n = high / low
    for r in runs:
        a, b = level_row(r.summary, low), level_row(r.summary, high)
        tps, ttft, itl = change(a, b, "output_tok_per_s"), change(a, b, "ttft"), change(a, b, "itl")
        if "unknown" in (tps.verdict, ttft.verdict, itl.verdict):
            continue
        text = (f"{r.label}, {_users(low)} → {_users(high)}: output tok/s {tps.ratio:.1f}x, "
                f"{ttft.text('TTFT p50')}, {itl.text('ITL p50')}")  # fmt: skip
        flat = tps.verdict == "same" or tps.ratio < 1.5
        if flat and ttft.verdict == "diff" and ttft.ratio > n / 2:
            text += (f": requests are served one after another (throughput stays while TTFT grows {ttft.ratio:.0f}x, "
                     f"the wait behind the others in the queue)")  # fmt: skip
        elif not flat and tps.verdict == "diff" and itl.verdict == "diff" and itl.ratio > 1:
            text += (f": the requests share each decode step ({n:g}x the users, {tps.ratio:.1f}x the tokens/s for "
                     f"{itl.ratio:.2f}x the gap between tokens)")  # fmt: skip
        elif not flat and tps.verdict == "diff" and itl.verdict == "same":
            text += f": {n:g}x the users cost each request's decode nothing measurable; throughput {tps.ratio:.1f}x"
        out.append(text + ".")
    return out


def _kv_cache(runs: list[EngineRun], high: float) -> list[str]:
    out = []
    for r in runs:
        row = level_row(r.summary, high)
        if row is None or r.kv_capacity_tokens is None:
            continue
        per_request = _mean_tokens(r.summary, row)
        if not np.isfinite(per_request):
            continue
        need = high * per_request
        share = need / r.kv_capacity_tokens
        if share < 0.5:
            fill = "never fills it, so what paged attention saves in memory (more sequences per GiB) cannot show here"
        else:
            fill = "fills most of it" if share < 1 else "needs more than it holds"
        out.append(
            f"{r.label}: {_users(high)} × {per_request:.0f} tokens (prompt + completion, means) ≈ {need:,.0f} tokens "
            f"of KV cache at once, {share:.1%} of its {r.kv_capacity_tokens:,} tokens: the load {fill}."
        )
    return out


def _mean_tokens(s: RunSummary, row: Any) -> float:
    """Mean prompt + completion tokens per measured request of the level (from the records)."""
    df: pd.DataFrame = s.run.requests
    level = df[(df["level"] == row["level"]) & df["ok"].astype(bool)]
    if level.empty:
        return math.nan
    prompt = level["prompt_tokens"].where(level["prompt_tokens"] >= 0)
    completion = level["completion_tokens"].where(level["completion_tokens"] >= 0)
    return float(prompt.mean() + completion.mean())
