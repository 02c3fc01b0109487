"""The metric definitions: one function or field per metric, formula and unit stated where it is defined.

All client-side times come from one monotonic clock (`time.perf_counter`, seconds) in the process that sent the
request; everything reported is in milliseconds unless the name says otherwise.

Per request (see `RequestTiming`), with `t_send` the instant just before the request bytes were written:

- TTFT  = t(first SSE event carrying a choice) − t_send. For chat, vLLM's first choice event is the role-only chunk
  (`delta: {role: assistant, content: ""}`); it is sent in the same engine step as the first token, and vLLM's own
  `vllm bench serve` starts TTFT at it, so this suite does too. It is not counted as a token event.
- token events: the SSE events that carry generated text (every choice event except a role-only chunk). vLLM sends one
  per generated token; ~3% carry empty text (special tokens), so they are counted, never the non-empty texts.
- ITL gaps = t(token event i) − t(token event i−1), i = 2..n: n − 1 gaps for n token events.
- E2E   = t(last token event) − t_send.
- TPOT  = (E2E − TTFT) / (output_tokens − 1), output_tokens from the `usage` chunk; undefined for one output token.
- multi_token: the server's `usage.completion_tokens` exceeds the number of token events, i.e. some events carried
  several tokens. Gaps are then kept per event (not divided among the event's tokens, which the client cannot
  attribute); TPOT, which counts tokens, stays exact; the request is flagged so reports can show it.

Aggregates (see `summarize`, `throughput`, `goodput`) are computed from these raw per-request values, never from
Locust's rounded response-time buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """Client-side timing of one streamed request, all in milliseconds since `t_send`."""

    ttft_ms: float
    """Time to first token: first choice event − send (see module docstring for the role chunk)."""
    e2e_ms: float
    """End-to-end latency: last token event − send."""
    token_times_ms: tuple[float, ...]
    """Arrival of each token event relative to send, in order."""

    @property
    def n_events(self) -> int:
        return len(self.token_times_ms)

    @property
    def itl_gaps_ms(self) -> list[float]:
        """Inter-token latencies: consecutive token-event differences (n_events − 1 values)."""
        t = self.token_times_ms
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    @property
    def itl_mean_ms(self) -> float:
        """Mean gap of this request = (last − first token event) / (n_events − 1); NaN below two events."""
        t = self.token_times_ms
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else math.nan

    def tpot_ms(self, output_tokens: int) -> float:
        """Time per output token after the first = (E2E − TTFT) / (output_tokens − 1); NaN for ≤ 1 token."""
        return (self.e2e_ms - self.ttft_ms) / (output_tokens - 1) if output_tokens > 1 else math.nan

    @classmethod
    def from_stamps(cls, t_send: float, first_choice_s: float, token_stamps_s: Sequence[float]) -> RequestTiming:
        """Build from perf_counter stamps in seconds: the send instant, the first choice event, each token event."""
        times = tuple((t - t_send) * 1000.0 for t in token_stamps_s)
        ttft = (first_choice_s - t_send) * 1000.0
        e2e = times[-1] if times else ttft
        return cls(ttft_ms=ttft, e2e_ms=e2e, token_times_ms=times)


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution of one metric: count, mean, standard deviation (ddof=0) and percentiles, in its unit."""

    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    min: float
    max: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": getattr(self, k) for k in self.__dataclass_fields__}


def summarize(values: Sequence[float] | np.ndarray) -> Summary:
    """Summary of finite values; percentiles by linear interpolation between order statistics (numpy's default,
    as in `vllm bench serve`). An empty input gives n=0 and NaN everywhere."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return Summary(0, *([math.nan] * 9))
    p50, p90, p95, p99, p999 = np.percentile(arr, PERCENTILES)
    return Summary(
        n=int(arr.size),
        mean=float(arr.mean()),
        std=float(arr.std()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        p999=float(p999),
        min=float(arr.min()),
        max=float(arr.max()),
    )


@dataclass(frozen=True, slots=True)
class Throughput:
    """Rates over a measurement window of `window_s` seconds."""

    window_s: float
    requests_per_s: float
    """Successful requests that ended inside the window / window."""
    output_tokens_per_s: float
    """Output tokens of those requests / window."""
    total_tokens_per_s: float
    """(Prompt + output tokens) of those requests / window."""


def throughput(
    end_times_s: np.ndarray, output_tokens: np.ndarray, prompt_tokens: np.ndarray, window: tuple[float, float]
) -> Throughput:
    """Rates of the successful requests whose last token arrived within `window` = (start, end), seconds.

    Counting by end time keeps requests that straddle a level boundary from being counted twice; with warm-up and
    cool-down cut off (see `LoadConfig`) the window holds steady state only.
    """
    lo, hi = window
    span = hi - lo
    inside = (end_times_s >= lo) & (end_times_s <= hi)
    if span <= 0:
        return Throughput(0.0, math.nan, math.nan, math.nan)
    out = float(np.nansum(output_tokens[inside]))
    prompt = float(np.nansum(prompt_tokens[inside]))
    return Throughput(span, float(inside.sum()) / span, out / span, (out + prompt) / span)


def meets_slo(
    ttft_ms: np.ndarray,
    itl_mean_ms: np.ndarray,
    tpot_ms: np.ndarray,
    e2e_ms: np.ndarray,
    *,
    ttft_max: float | None = None,
    itl_max: float | None = None,
    tpot_max: float | None = None,
    e2e_max: float | None = None,
) -> np.ndarray:
    """Per request: True when every objective that is set holds (≤). An unset objective always holds; a metric
    that is undefined for the request (NaN, e.g. TPOT of a one-token reply) holds too."""
    ok = np.ones(len(ttft_ms), dtype=bool)
    for values, limit in ((ttft_ms, ttft_max), (itl_mean_ms, itl_max), (tpot_ms, tpot_max), (e2e_ms, e2e_max)):
        if limit is not None:
            ok &= ~(values > limit)  # NaN > limit is False, so undefined metrics pass
    return ok


def goodput(n_meeting: int, n_total: int, window_s: float) -> tuple[float, float]:
    """(goodput in requests/s = requests meeting every SLO / window, fraction meeting = n_meeting / n_total)."""
    rate = n_meeting / window_s if window_s > 0 else math.nan
    frac = n_meeting / n_total if n_total else math.nan
    return rate, frac
