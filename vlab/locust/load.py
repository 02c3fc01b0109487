"""Load models: which load level is in force, the staged shape, and the open-loop arrival schedule.

- Closed loop: `users` per stage. With stages (always in headless runs), `ScenarioShape` — a Locust
  `LoadTestShape` — moves through them; in the web UI without stages, each user count the form starts is a level.
- Open loop: `rate` per stage. One `ArrivalSchedule` per process draws arrival instants (constant, Poisson, or
  gamma gaps with mean 1/rate) and hands them out as tickets; `max_in_flight` slot users take tickets, so the
  achieved rate follows the schedule, not the users' response times, and a ticket that waits for a free slot has
  its wait recorded (`queue_wait_ms`), never folded into TTFT.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import gevent
from gevent.queue import Queue

from vlab.core.scenario import ArrivalConfig, LoadConfig


@dataclass(slots=True)
class Level:
    """A load level as it ran: index, target (users or arrivals/s), wall-clock start and end (Unix s)."""

    index: int
    target: float
    start_s: float
    end_s: float | None = None


@dataclass
class LevelTracker:
    """The level in force in this process. Read by users at send time; moved by the shape or the UI."""

    open_loop: bool
    levels: list[Level] = field(default_factory=list)

    @property
    def current(self) -> Level | None:
        return self.levels[-1] if self.levels else None

    def enter(self, target: float, index: int | None = None, at: float | None = None) -> Level:
        """Start a new level (no-op when `target` and `index` match the current one)."""
        now = time.time() if at is None else at
        cur = self.current
        if cur is not None and cur.target == target and (index is None or index == cur.index):
            return cur
        if cur is not None and cur.end_s is None:
            cur.end_s = now
        level = Level(index=len(self.levels) if index is None else index, target=target, start_s=now)
        self.levels.append(level)
        return level

    def close(self, at: float | None = None) -> None:
        if self.current is not None and self.current.end_s is None:
            self.current.end_s = time.time() if at is None else at


def stage_at(load: LoadConfig, elapsed_s: float) -> int | None:
    """Index of the stage in force `elapsed_s` seconds into the run, None once all stages are done."""
    end = 0.0
    for i, stage in enumerate(load.stages):
        end += stage.duration
        if elapsed_s < end:
            return i
    return None


def interarrival_s(arrival: ArrivalConfig, rate: float, rng: random.Random) -> float:
    """One gap between arrivals, seconds, with mean 1/rate: constant, exponential (Poisson), or
    gamma(shape=burstiness, scale=1/(rate·burstiness)) as in `vllm bench serve`."""
    if arrival.process == "constant":
        return 1.0 / rate
    if arrival.process == "poisson":
        return rng.expovariate(rate)
    return rng.gammavariate(arrival.burstiness, 1.0 / (rate * arrival.burstiness))


def stage_arrivals(arrival: ArrivalConfig, rate: float, duration_s: float, rng: random.Random) -> list[float]:
    """Arrival offsets (seconds from the stage start) for one stage: n = round(rate · duration) gaps drawn from the
    arrival law, then scaled by one common factor so that they sum to n / rate.

    The factor is 1 ± 1/√n, so the law's shape (coefficient of variation, burstiness) is kept, while the stage
    holds exactly the target count: a plain Poisson draw over a 30 s stage misses its rate by ±6% (1/√n) by chance
    alone, which would make the achieved rate meaningless as a check of the load generator.
    """
    n = round(rate * duration_s)
    if n <= 0:
        return []
    gaps = [interarrival_s(arrival, rate, rng) for _ in range(n)]
    scale = (n / rate) / sum(gaps)
    offsets, t = [], 0.0
    for gap in gaps:
        t += gap * scale
        offsets.append(t)
    return offsets


class Background:
    """A loop in its own greenlet: `start()` spawns `_run`, `stop()` kills it."""

    _greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        raise NotImplementedError


class ArrivalSchedule(Background):
    """Open-loop tickets for this process. A ticket is the perf_counter instant its request was due."""

    def __init__(self, load: LoadConfig, tracker: LevelTracker, share: float = 1.0, seed: str = "") -> None:
        self.load = load
        self.tracker = tracker
        self.share = share
        """This process's fraction of the global rate (1 / number of worker processes)."""
        self.rng = random.Random(f"arrivals:{seed}")
        self.tickets: Queue = Queue()
        self.issued = 0

    def _run(self) -> None:
        done: int | None = None
        while True:
            level = self.tracker.current
            if level is None or level.index == done or level.index >= len(self.load.stages):
                gevent.sleep(0.01)
                continue
            done = level.index
            stage = self.load.stages[level.index]
            # The stage began at level.start_s (wall clock); express that on the perf_counter clock.
            t0 = time.perf_counter() - (time.time() - level.start_s)
            for offset in stage_arrivals(self.load.arrival, level.target * self.share, stage.duration, self.rng):
                if self.tracker.current is not level:
                    break
                due = t0 + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
                self.tickets.put(due)
                self.issued += 1

    def take(self) -> float:
        """Block until a ticket is due; return its due instant (perf_counter seconds)."""
        return self.tickets.get()


def achieved_rate(n_arrivals: int, window_s: float) -> float:
    return n_arrivals / window_s if window_s > 0 else math.nan
