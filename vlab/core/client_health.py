"""The load generator's own health: when are its timings trustworthy? Thresholds shared by the sampler
(`vlab.locust.monitor`) and the report (`analysis.client_monitor`).

Each sample of a load-generating process (`client_monitor.csv`) holds:

- `cpu`: (user + system CPU seconds of the process) / wall seconds since the last sample — the share of one core;
- `hub_lag_ms`: how late a `gevent.sleep(TICK_S)` woke up, max over the sample, ms;
- `events_rx`: SSE events (`data:` lines) received by the process's streams since the last sample — read off the
  raw bytes without parsing, so the live view can show output tokens/s before requests end (role, usage and [DONE]
  events are in the count: ≈ 3 per request more than its token events);
- `in_flight`: requests in flight at the sample;
- `ttft_p50_ms`, `ttft_p95_ms`: first body read − send of the streams whose first data arrived since the last
  sample; `itl_p50_ms`, `itl_p95_ms`: gaps between consecutive reads of one stream in that time. Both are live
  approximations from socket reads (a read can hold several events); the records hold the exact values.

Thresholds come from the client benchmark (docs/performance.md): past ~70% of a core the client falls behind its
streams under lockstep bursts.
"""

from __future__ import annotations

from typing import Literal

MONITOR_COLUMNS = (
    "t_s", "node", "level", "cpu", "hub_lag_ms", "events_rx", "in_flight",
    "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms",
)  # fmt: skip
MONITOR_HEADER = ",".join(MONITOR_COLUMNS) + "\n"
PERIOD_S = 1.0
"""Seconds between samples."""
TICK_S = 0.05
"""The sleep whose lateness is the hub lag, seconds."""
CPU_SATURATED = 0.70
"""Share of one core above which this process's timing is at risk (client benchmark, docs/performance.md)."""
HUB_LAG_SATURATED_MS = 20.0
"""Hub lag above which events queue noticeably in the process."""

Health = Literal["", "saturated", "blocked", "starved"]
SEVERITY: tuple[Health, ...] = ("saturated", "blocked", "starved")
"""Flags from the worst: a level's flag is the worst of its samples'."""


def classify(cpu: float, hub_lag_ms: float, period_s: float = PERIOD_S) -> Health:
    """One sample's health:

    - `saturated`: the process's own CPU reached CPU_SATURATED of a core;
    - `blocked`: the hub lagged past HUB_LAG_SATURATED_MS and the process itself ran at least half that long in the
      sample (cpu × period ≥ lag / 2): one long synchronous step of its own held every stream;
    - `starved`: the hub lagged while the process barely ran: the machine was busy elsewhere;
    - "" (timings trustworthy)."""
    if cpu >= CPU_SATURATED:
        return "saturated"
    if hub_lag_ms >= HUB_LAG_SATURATED_MS:
        return "blocked" if cpu * period_s * 1000.0 >= hub_lag_ms / 2 else "starved"
    return ""


def worst(flags: list[Health]) -> Health:
    """The most severe of several samples' flags ("" when all are fine)."""
    for flag in SEVERITY:
        if flag in flags:
            return flag
    return ""
