"""How sure a number is: confidence intervals, steady-state detection, and when a comparison is supported.

- `quantile_ci(values, q)`: a 95% confidence interval for the q-quantile (percentiles by linear interpolation, as
  `vlab.core.metrics.summarize`). Up to `BOOTSTRAP_MAX_N` values it is the percentile bootstrap (`BOOTSTRAP_B`
  resamples with replacement, seeded, so a report is reproducible); above it, the distribution-free order-statistic
  interval [x_(l), x_(u)] with l, u = n·q ∓ 1.96·√(n·q·(1−q)), which the bootstrap converges to for large n and
  costs nothing. With `groups` (e.g. the request each ITL gap belongs to) the bootstrap resamples whole groups, so
  values that are correlated within a request are not treated as independent.
- `mean_ci(values)`: percentile bootstrap of the mean (used for throughput over 1-second bins).
- `steady_state_start(values)`: MSER-5 (White, 1997): the values, in send order, are cut into batches of 5; the
  truncation d (in batches, at most half of them) that minimises MSER(d) = Σ_{i>d} (Y_i − Ȳ_d)² / (m − d)² over the
  batch means Y is where steady state begins. It removes the start-up transient (a closed loop's first wave of
  requests all arriving at once) without a fixed warm-up time.
- `distinguishable(a, b)`: two intervals that overlap do not support a claim that one value is larger.
- `t_mean_ci(values)`: the Student t interval of a mean over a few independent repeats (mean ± t(0.975, n−1)·s/√n,
  s the sample standard deviation), for a metric measured once per run across repeated runs.
- `proportion_ci(k, n)`: the Wilson score interval of a proportion k/n (an error rate, an SLO fraction).

All intervals are 95% (`CONFIDENCE`). Values that are NaN are dropped first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
Z = 1.959963984540054
"""Standard normal quantile for a two-sided 95% interval."""
BOOTSTRAP_B = 400
"""Bootstrap resamples per interval (the 2.5/97.5 percentiles of 400 replicates move by < 1% of the width)."""
BOOTSTRAP_MAX_N = 20_000
"""Above this many values the order-statistic interval replaces the bootstrap (same limit, no resampling cost)."""
MSER_BATCH = 5
MIN_SAMPLES = 30
"""Fewer measured requests than this in a level: its percentiles and any comparison with it are not supported."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate and its 95% confidence interval, in the estimate's unit; NaN bounds when not computable."""

    value: float
    lo: float
    hi: float

    @property
    def known(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def half_width(self) -> float:
        """(hi − lo) / 2: the interval's half width, NaN when not computable."""
        return (self.hi - self.lo) / 2.0


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def _finite(values: np.ndarray | list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    finite: np.ndarray = arr[np.isfinite(arr)]
    return finite


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def quantile_ci(values: np.ndarray | list[float], q: float, groups: np.ndarray | None = None) -> Interval:
    """The q-quantile (0 < q < 1) of `values` and its 95% interval (see the module docstring for the method)."""
    arr = np.asarray(values, dtype=float)
    keep = np.isfinite(arr)
    arr = arr[keep]
    n = arr.size
    if n == 0:
        return NAN_INTERVAL
    point = float(np.percentile(arr, q * 100.0))
    if n < 2:
        return Interval(point, math.nan, math.nan)
    if groups is not None:
        return _cluster_bootstrap(arr, np.asarray(groups)[keep], q, point)
    if n > BOOTSTRAP_MAX_N:
        ordered = np.sort(arr)
        half = Z * math.sqrt(n * q * (1.0 - q))
        lo = int(max(0, math.floor(n * q - half)))
        hi = int(min(n - 1, math.ceil(n * q + half)))
        return Interval(point, float(ordered[lo]), float(ordered[hi]))
    rng = _rng()
    reps = np.empty(BOOTSTRAP_B)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, BOOTSTRAP_B, chunk):
        stop = min(BOOTSTRAP_B, start + chunk)
        draws = arr[rng.integers(0, n, size=(stop - start, n))]
        reps[start:stop] = np.percentile(draws, q * 100.0, axis=1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(point, float(lo), float(hi))


def _cluster_bootstrap(arr: np.ndarray, groups: np.ndarray, q: float, point: float) -> Interval:
    """Resample whole groups: each replicate weights every value by how often its group was drawn, and takes the
    weighted q-quantile over the values sorted once."""
    order = np.argsort(arr, kind="stable")
    sorted_vals = arr[order]
    _, codes = np.unique(groups[order], return_inverse=True)
    m = int(codes.max()) + 1 if codes.size else 0
    if m < 2:
        return Interval(point, math.nan, math.nan)
    rng = _rng()
    b = BOOTSTRAP_B if arr.size <= 2_000_000 else 50
    reps = np.empty(b)
    for k in range(b):
        counts = np.bincount(rng.integers(0, m, size=m), minlength=m)
        weights = counts[codes].astype(float)
        cum = np.cumsum(weights)
        if cum[-1] <= 0:
            reps[k] = math.nan
            continue
        reps[k] = sorted_vals[min(int(np.searchsorted(cum, q * cum[-1])), sorted_vals.size - 1)]
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return Interval(point, math.nan, math.nan)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(point, float(lo), float(hi))


def _too_few(arr: np.ndarray) -> Interval | None:
    """The interval of fewer than 2 values (NaN for none, the value without bounds for one); None for 2 or more."""
    if arr.size == 0:
        return NAN_INTERVAL
    if arr.size < 2:
        return Interval(float(arr[0]), math.nan, math.nan)
    return None


def mean_ci(values: np.ndarray | list[float]) -> Interval:
    """The mean of `values` and its 95% percentile-bootstrap interval."""
    arr = _finite(values)
    if (few := _too_few(arr)) is not None:
        return few
    n, point = arr.size, float(arr.mean())
    draws = arr[_rng().integers(0, n, size=(BOOTSTRAP_B, n))]
    lo, hi = np.percentile(draws.mean(axis=1), [2.5, 97.5])
    return Interval(point, float(lo), float(hi))


def steady_state_start(values: np.ndarray | list[float], batch: int = MSER_BATCH) -> int:
    """Index of the first value of the steady state by MSER-5 (0 = no transient found, or too few values).

    Values are in their time order (requests by send time). NaNs are kept out of the batch means."""
    arr = np.asarray(values, dtype=float)
    m = arr.size // batch
    if m < 4:
        return 0
    means = np.nanmean(arr[: m * batch].reshape(m, batch), axis=1)
    if not np.isfinite(means).all():
        means = np.where(np.isfinite(means), means, np.nanmean(means))
    best_d, best = 0, math.inf
    for d in range(0, m // 2 + 1):
        tail = means[d:]
        score = float(np.sum((tail - tail.mean()) ** 2)) / (tail.size**2)
        if score < best:
            best_d, best = d, score
    return best_d * batch


def distinguishable(a: Interval, b: Interval) -> bool:
    """True when both intervals are known and do not overlap: only then is "a differs from b" supported."""
    return a.known and b.known and (a.hi < b.lo or b.hi < a.lo)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t distribution with `df` ≥ 1 degrees of freedom.

    Bisection on the exact CDF for integer degrees of freedom (Abramowitz & Stegun 26.7.3–4): with
    θ = atan(t/√df), P(|T| ≤ t) = 2/π·(θ + sin θ·(cos θ + 2/3·cos³θ + …)) for odd df and
    sin θ·(1 + 1/2·cos²θ + 3/8·cos⁴θ + …) for even df, the series running to cos^(df−2)θ."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df ≥ 1, got p={p}, df={df}")
    target = 2.0 * p - 1.0  # P(|T| ≤ t)
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if _t_central(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2.0


def _t_central(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer `df` (see `t_quantile`)."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:
        term, total = c, c if df > 1 else 0.0
        for k in range(3, df - 1, 2):  # the coefficient of cos^k: 2·4···(k−1) / (1·3···k)
            term *= c * c * (k - 1) / k
            total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0
    for k in range(2, df - 1, 2):  # the coefficient of cos^k: 1·3···(k−1) / (2·4···k)
        term *= c * c * (k - 1) / k
        total += term
    return s * total


def t_mean_ci(values: np.ndarray | list[float]) -> Interval:
    """The mean of `values` (one per repeated run) and its 95% Student t interval, mean ± t(0.975, n−1)·s/√n with
    s the sample standard deviation (ddof 1); no interval for fewer than 2 values."""
    arr = _finite(values)
    if (few := _too_few(arr)) is not None:
        return few
    n, point = arr.size, float(arr.mean())
    half = t_quantile(0.5 + CONFIDENCE / 2.0, n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Interval(point, point - half, point + half)


def proportion_ci(k: int, n: int) -> Interval:
    """k/n and its 95% Wilson score interval, (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n); it stays inside
    [0, 1] and is not empty at k = 0 or k = n. NaN for n = 0."""
    if n <= 0:
        return NAN_INTERVAL
    p = k / n
    z2 = Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, lo, hi)
