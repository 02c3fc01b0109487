"""Self-monitoring of the load generator, and the live view of streams still in flight.

Every load-generating process samples itself once per `PERIOD_S` (columns in `vlab.core.client_health`): CPU share
of one core, gevent hub lag, and, from the raw socket reads of its streams (no parsing), events received, requests
in flight, live TTFT and read gaps. Samples go to `client_monitor.csv` through the same sinks as the records (so
distributed runs collect every worker's samples on the master). When a sample crosses the thresholds the terminal
says so once per level and process, and the report flags the level.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import gevent
import numpy as np
import psutil

from vlab.client.stream import RawStream
from vlab.core.client_health import CPU_SATURATED, PERIOD_S, TICK_S, classify
from vlab.locust.background import Background
from vlab.locust.levels import LevelTracker

log = logging.getLogger("vlab")
_EVENT = b"data:"


def _pct(values: list[float], q: float) -> str:
    return f"{float(np.percentile(values, q)):.2f}" if values else ""


class ClientMonitor(Background):
    """Samples this process; hands each sample line to `emit` (a sink's `add_monitor`)."""

    def __init__(self, node: str, tracker: LevelTracker, emit: Callable[[str], None]) -> None:
        self.node = node
        self.tracker = tracker
        self.emit = emit
        self.process = psutil.Process(os.getpid())
        self.warned_levels: set[int] = set()

    def _reads(self) -> tuple[int, list[float], list[float]]:
        """Events, first-read TTFTs (ms) and read gaps (ms) of the reads that arrived since the last sample."""
        events, ttfts, gaps = 0, [], []
        streams: list[RawStream] = [*self.tracker.streams.values(), *self.tracker.ended_streams]
        self.tracker.ended_streams = []
        for raw in streams:
            reads, stamps, seen = raw.reads, raw.stamps, raw.seen
            n = len(stamps)
            if n <= seen:
                continue
            for i in range(seen, n):
                events += reads[i].count(_EVENT)
                if i == 0:
                    ttfts.append((stamps[0] - raw.t_send) * 1000.0)
                else:
                    gaps.append((stamps[i] - stamps[i - 1]) * 1000.0)
            raw.seen = n
        return events, ttfts, gaps

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
            events, ttfts, gaps = self._reads()
            self.emit(
                f"{time.time():.3f},{self.node},{index},{cpu:.3f},{lag_ms:.2f},{events},{self.tracker.in_flight},"
                f"{_pct(ttfts, 50)},{_pct(ttfts, 95)},{_pct(gaps, 50)},{_pct(gaps, 95)}\n"
            )
            if index >= 0 and index not in self.warned_levels and classify(cpu, lag_ms):
                self.warned_levels.add(index)
                log.warning("vlab: %s", describe(self.node, index, cpu, lag_ms))


def describe(node: str, level: int, cpu: float, hub_lag_ms: float) -> str:
    """The warning for a sample past the thresholds: saturated by its own work, or starved by the machine."""
    if cpu >= CPU_SATURATED:
        return (
            f"load generator {node} saturated at level {level} (CPU {cpu:.0%} of a core, hub lag {hub_lag_ms:.0f} ms): "
            "client-side timings may be distorted; add worker processes (--processes N)"
        )
    if classify(cpu, hub_lag_ms) == "blocked":
        return (
            f"load generator {node} blocked at level {level} (hub lag {hub_lag_ms:.0f} ms, {cpu:.0%} CPU): one long "
            "synchronous step of the client held every stream; the records of that second may be late"
        )
    return (
        f"load generator {node} starved at level {level} (hub lag {hub_lag_ms:.0f} ms at only {cpu:.0%} CPU): the "
        "machine is busy with other work, so sending and reading lag; run the load generator where it has a free core"
    )
