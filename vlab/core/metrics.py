"""The metric definitions: one function or field per metric, formula and unit stated where it is defined.

All client-side times come from one monotonic clock (`time.perf_counter`, seconds) in the process that sent the
request; everything reported is in milliseconds unless the name says otherwise.

Per request (see `RequestTiming`), with `t_send` the instant just before the request bytes were written:

- token events: the SSE choice events that carry generated output — text (possibly empty: vLLM sends one event per
  generated token and ~3% of them carry empty text, special tokens), reasoning text (`reasoning` or the older
  `reasoning_content`) or a tool call. A chat stream's role-only first chunk (`delta: {role: assistant, content: ""}`)
  is not a token event. Events are counted, never their texts.
- TTFT  = t(first token event) − t_send: the first generated token, never a role-only chunk.
- first chunk = t(first choice event, role-only chunks included) − t_send: `vllm bench serve`'s TTFT. vLLM sends the
  role chunk in the same engine step as the first token, so the two agree there; a server that sends the role
  early makes them differ, and the report shows both.
- ITL gaps = t(token event i) − t(token event i−1), i = 2..n: n − 1 gaps for n token events.
- E2E   = t(last token event) − t_send.
- TPOT  = (E2E − TTFT) / (output_tokens − 1), output_tokens from the `usage` chunk; undefined for one output token.
- not streamed (embeddings): E2E = t(last byte of the response) − t_send; no token events, so TTFT, ITL and TPOT
  are undefined (NaN), and the request succeeds without any.
- multi_token: the server's `usage.completion_tokens` exceeds the number of token events, i.e. some events carried
  several tokens. Gaps are then kept per event (not divided among the event's tokens, which the client cannot
  attribute); TPOT, which counts tokens, stays exact; the request is flagged so reports can show it.

Reasoning streams (`PhaseTiming`): each token event is a reasoning event (its delta carries `reasoning` or
`reasoning_content` text; Responses API: `response.reasoning_text.delta`), an answer event (content, a tool call, or
`response.output_text.delta` text) or an empty one (neither, e.g. an empty content string). Every event belongs to
the reasoning or the answer phase: its own kind's, or, if empty, the phase of the event before it (leading empty
events: the phase of the first non-empty one). For a stream with at least one reasoning event:

- TTFR = t(first reasoning event) − t_send; TTFA = t(first answer event) − t_send (NaN without one);
- reasoning / answer tokens = events in each phase (tokens when each event carries one, i.e. not multi_token);
- ITL per phase = mean of the gaps t_i − t_(i−1) whose two events are both in that phase, i.e. (last − first) /
  (n − 1) for a contiguous phase; the one gap across the boundary belongs to neither.

What a request counts as (`outcome`): ok, failed, cut off (in flight when the run stopped: never a failure, never in
an error rate, never against an SLO) or rate limited (HTTP 429: refused for load, shown apart from server failures).

Aggregates (see `summarize`, `throughput`, `goodput`) are computed from these raw per-request values, never from
Locust's rounded response-time buckets; their confidence intervals are in `vlab.core.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)


def itl_mean(first_ms: Any, last_ms: Any, n_events: Any) -> Any:
    """Mean inter-token gap = (last − first token event) / (n_events − 1), ms; NaN below two events.
    Takes floats or numpy arrays (then element-wise)."""
    if isinstance(n_events, np.ndarray):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_events > 1, (last_ms - first_ms) / (n_events - 1), np.nan)
    return (last_ms - first_ms) / (n_events - 1) if n_events > 1 else math.nan


def tpot(e2e_ms: Any, ttft_ms: Any, output_tokens: Any) -> Any:
    """Time per output token after the first = (E2E − TTFT) / (output_tokens − 1), ms; NaN for ≤ 1 token.
    Takes floats or numpy arrays (then element-wise)."""
    if isinstance(output_tokens, np.ndarray):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(output_tokens > 1, (e2e_ms - ttft_ms) / (output_tokens - 1), np.nan)
    return (e2e_ms - ttft_ms) / (output_tokens - 1) if output_tokens > 1 else math.nan


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """Client-side timing of one streamed request, all in milliseconds since `t_send`."""

    first_chunk_ms: float
    """First choice event − send, role-only chunks included (see the module docstring)."""
    ttft_ms: float
    """Time to first token: first token event − send (NaN when no token arrived)."""
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
        """Mean gap of this request (`itl_mean`); NaN below two events."""
        t = self.token_times_ms
        return itl_mean(t[0], t[-1], len(t)) if t else math.nan

    def tpot_ms(self, output_tokens: int) -> float:
        """Time per output token after the first (`tpot`); NaN for ≤ 1 token."""
        return float(tpot(self.e2e_ms, self.ttft_ms, output_tokens))

    @classmethod
    def from_stamps(cls, t_send: float, first_choice_s: float, token_stamps_s: Sequence[float]) -> RequestTiming:
        """Build from perf_counter stamps in seconds: the send instant, the first choice event, each token event."""
        times = tuple((t - t_send) * 1000.0 for t in token_stamps_s)
        first_chunk = (first_choice_s - t_send) * 1000.0
        ttft = times[0] if times else math.nan
        e2e = times[-1] if times else math.nan
        return cls(first_chunk_ms=first_chunk, ttft_ms=ttft, e2e_ms=e2e, token_times_ms=times)

    @classmethod
    def unstreamed(cls, t_send: float, end_s: float) -> RequestTiming:
        """A response that is not streamed (embeddings), from perf_counter stamps in seconds: E2E = its last byte −
        send; it has no token events, so no first chunk, TTFT, ITL or TPOT."""
        return cls(first_chunk_ms=math.nan, ttft_ms=math.nan, e2e_ms=(end_s - t_send) * 1000.0, token_times_ms=())


REASONING, ANSWER, EMPTY = "R", "A", "E"
"""Kinds of token events (module docstring), one character per event in `PhaseTiming.from_events`."""


@dataclass(frozen=True, slots=True)
class PhaseTiming:
    """The reasoning and answer phases of one stream, in ms since `t_send` (see the module docstring)."""

    ttfr_ms: float
    ttfa_ms: float
    reasoning_tokens: int
    answer_tokens: int
    itl_reasoning_ms: float
    itl_answer_ms: float

    @classmethod
    def from_events(cls, token_times_ms: Sequence[float], kinds: str) -> PhaseTiming | None:
        """From each token event's time (ms since send) and kind (`REASONING`, `ANSWER` or `EMPTY`, one character
        per event); None when no event carried reasoning."""
        if REASONING not in kinds:
            return None
        if len(kinds) != len(token_times_ms):
            raise ValueError(f"{len(kinds)} event kinds for {len(token_times_ms)} token events")
        first_known = next(k for k in kinds if k != EMPTY)
        phases: list[str] = []
        for kind in kinds:
            phases.append(kind if kind != EMPTY else (phases[-1] if phases else first_known))
        gaps: dict[str, list[float]] = {REASONING: [], ANSWER: []}
        for i in range(1, len(phases)):
            if phases[i] == phases[i - 1]:
                gaps[phases[i]].append(token_times_ms[i] - token_times_ms[i - 1])
        first_answer = kinds.find(ANSWER)
        return cls(
            ttfr_ms=token_times_ms[kinds.index(REASONING)],
            ttfa_ms=token_times_ms[first_answer] if first_answer >= 0 else math.nan,
            reasoning_tokens=phases.count(REASONING),
            answer_tokens=phases.count(ANSWER),
            itl_reasoning_ms=_mean(gaps[REASONING]),
            itl_answer_ms=_mean(gaps[ANSWER]),
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


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


# ------------------------------------------------------------------------------------------------------- outcomes
class Outcome:
    """What a recorded request counts as. `outcomes` is the one place that decides it."""

    OK = "ok"
    FAILED = "failed"
    CUT_OFF = "cut_off"
    RATE_LIMITED = "rate_limited"


NOT_FAILURES = frozenset({"cut_off", "rate_limited"})
"""Error kinds that are not server failures: the run's own stop, and load refused on purpose (429)."""


def outcomes(ok: np.ndarray, error_kind: np.ndarray) -> np.ndarray:
    """Per request: `Outcome.OK`, `CUT_OFF`, `RATE_LIMITED` or `FAILED` (every other error kind), as an object array.

    Error rates are failed / (ok + failed): cut-off and rate-limited requests are in neither the numerator nor the
    denominator, and never count against an SLO."""
    kinds = np.asarray(error_kind, dtype=object)
    out = np.full(len(kinds), Outcome.FAILED, dtype=object)
    out[np.asarray(ok, dtype=bool)] = Outcome.OK
    out[kinds == "cut_off"] = Outcome.CUT_OFF
    out[kinds == "rate_limited"] = Outcome.RATE_LIMITED
    return out


def error_rate(n_failed: int, n_ok: int) -> float:
    """failed / (ok + failed); NaN when neither happened."""
    total = n_failed + n_ok
    return n_failed / total if total else math.nan


# ---------------------------------------------------------------------------------------------- token arrivals
def tokens_in_window(first_s: np.ndarray, last_s: np.ndarray, tokens: np.ndarray, window: tuple[float, float]) -> float:
    """Output tokens received inside `window` = (start, end) (Unix s), from request spans alone (no tokens.csv).

    A request's `tokens` are taken as spread evenly over [first token, last token]; the part of that span inside the
    window counts: Σ tokens · |span ∩ window| / |span| (a one-token span counts whole if its instant is inside).
    `analysis.load` uses the token events themselves when tokens.csv exists; this is the fallback.
    """
    lo, hi = window
    first, last = np.asarray(first_s, float), np.asarray(last_s, float)
    tok = np.asarray(tokens, float)
    valid = np.isfinite(first) & np.isfinite(last) & np.isfinite(tok) & (tok > 0)
    span = last - first
    overlap = np.clip(np.minimum(last, hi) - np.maximum(first, lo), 0.0, None)
    point = valid & (span <= 0) & (first >= lo) & (first <= hi)
    spread = valid & (span > 0)
    return float(np.sum(tok[spread] * overlap[spread] / span[spread]) + np.sum(tok[point]))


MOST_FAILED = 0.5
"""A run in which more than this share of its requests (ok + failed) failed is a failed run."""


def judge_run(n_ok: int, failed_by_kind: dict[str, int]) -> str | None:
    """Why a run that ran its levels has failed, or None when it has not: no request ended, the server could not be
    reached for most requests, or most requests failed (cut-off and rate-limited requests count for neither)."""
    n_failed = sum(failed_by_kind.values())
    total = n_ok + n_failed
    if total == 0:
        return "no request ended (none was sent, or every one was cut off)"
    connect = failed_by_kind.get("connect", 0)
    if connect / total > MOST_FAILED:
        return f"the server was unreachable: {connect} of {total} requests could not connect"
    if n_failed / total > MOST_FAILED:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(failed_by_kind.items(), key=lambda kv: -kv[1]) if v)
        return f"most requests failed: {n_failed} of {total} ({kinds})"
    return None
