"""Self-monitoring of the load generator: is this process fast enough to time tokens honestly?

Every load-generating process samples, once per `PERIOD_S`:

- CPU: (user + system CPU seconds of this process) / wall seconds since the last sample — the share of one core;
- hub lag: how late a `gevent.sleep(TICK_S)` wakes up, max over the sample, ms. A late hub means events wait to be
  handled; with kernel receive stamps the token times stay right, but the load itself (sending, parsing) lags.

Samples are written to `client_monitor.csv` (`t_s,node,level,cpu,hub_lag_ms`), through the same sinks as the
records (so distributed runs collect every worker's samples on the master). When a sample crosses the thresholds
the terminal says so once per level and process, and the report flags the level.

Thresholds come from the client benchmark (docs/performance.md): past ~70% of a core the client falls behind its
streams under lockstep bursts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import gevent
import psutil

from vlab.locust.load import Background, LevelTracker

MONITOR_CSV = "client_monitor.csv"
MONITOR_HEADER = "t_s,node,level,cpu,hub_lag_ms\n"
PERIOD_S = 1.0
TICK_S = 0.05
CPU_SATURATED = 0.70
"""Share of one core above which this process's timing is at risk (client benchmark, docs/performance.md)."""
HUB_LAG_SATURATED_MS = 20.0
"""Hub lag above which events queue noticeably in the process."""

log = logging.getLogger("vlab")


def is_saturated(cpu: float, hub_lag_ms: float) -> bool:
    return cpu >= CPU_SATURATED or hub_lag_ms >= HUB_LAG_SATURATED_MS


class ClientMonitor(Background):
    """Samples this process; hands each sample line to `emit` (a sink's `add_monitor`)."""

    def __init__(self, node: str, tracker: LevelTracker, emit: Callable[[str], None]) -> None:
        self.node = node
        self.tracker = tracker
        self.emit = emit
        self.process = psutil.Process(os.getpid())
        self.warned_levels: set[int] = set()

    def _run(self) -> None:
        times = self.process.cpu_times()
        cpu_before, wall_before = times.user + times.system, time.perf_counter()
        while True:
            worst_lag = 0.0
            deadline = wall_before + PERIOD_S
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                gevent.sleep(TICK_S)
                worst_lag = max(worst_lag, time.perf_counter() - t0 - TICK_S)
            times = self.process.cpu_times()
            cpu_now, wall_now = times.user + times.system, time.perf_counter()
            cpu = (cpu_now - cpu_before) / (wall_now - wall_before)
            cpu_before, wall_before = cpu_now, wall_now
            level = self.tracker.current
            index = level.index if level else -1
            lag_ms = worst_lag * 1000.0
            self.emit(f"{time.time():.3f},{self.node},{index},{cpu:.3f},{lag_ms:.2f}\n")
            if index >= 0 and index not in self.warned_levels and is_saturated(cpu, lag_ms):
                self.warned_levels.add(index)
                log.warning("vlab: %s", describe(self.node, index, cpu, lag_ms))


def describe(node: str, level: int, cpu: float, hub_lag_ms: float) -> str:
    """The warning for a sample past the thresholds: saturated by its own work, or starved by the machine."""
    if cpu >= CPU_SATURATED:
        return (
            f"load generator {node} saturated at level {level} (CPU {cpu:.0%} of a core, hub lag {hub_lag_ms:.0f} ms): "
            "client-side timings may be distorted; add worker processes (--processes N)"
        )
    return (
        f"load generator {node} starved at level {level} (hub lag {hub_lag_ms:.0f} ms at only {cpu:.0%} CPU): the "
        "machine is busy with other work, so sending and reading lag; run the load generator where it has a free core"
    )
