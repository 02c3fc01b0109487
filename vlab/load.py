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
from locust import LoadTestShape

from vlab.scenario import ArrivalConfig, LoadConfig


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


def make_shape_class(load: LoadConfig, on_stage: callable) -> type[LoadTestShape]:
    """A LoadTestShape that walks the scenario's stages; `on_stage(index, target)` runs when a stage begins."""

    class ScenarioShape(LoadTestShape):
        """Runs the scenario's stages in order, then stops the test."""

        def __init__(self) -> None:
            super().__init__()
            self._stage: int | None = None

        def tick(self):
            index = stage_at(load, self.get_run_time())
            if index is None:
                return None
            stage = load.stages[index]
            if index != self._stage:
                self._stage = index
                on_stage(index, stage.target)
            if load.open_loop:  # slot users: all of them from the start; the schedule sets the pace
                return load.arrival.max_in_flight, max(load.spawn_rate, float(load.arrival.max_in_flight))
            return stage.users, load.spawn_rate

    return ScenarioShape


def interarrival_s(arrival: ArrivalConfig, rate: float, rng: random.Random) -> float:
    """One gap between arrivals, seconds, with mean 1/rate: constant, exponential (Poisson), or
    gamma(shape=burstiness, scale=1/(rate·burstiness)) as in `vllm bench serve`."""
    if arrival.process == "constant":
        return 1.0 / rate
    if arrival.process == "poisson":
        return rng.expovariate(rate)
    return rng.gammavariate(arrival.burstiness, 1.0 / (rate * arrival.burstiness))


class ArrivalSchedule:
    """Open-loop tickets for this process. A ticket is the perf_counter instant its request was due."""

    def __init__(self, arrival: ArrivalConfig, tracker: LevelTracker, share: float = 1.0, seed: str = "") -> None:
        self.arrival = arrival
        self.tracker = tracker
        self.share = share
        """This process's fraction of the global rate (1 / number of worker processes)."""
        self.rng = random.Random(f"arrivals:{seed}")
        self.tickets: Queue = Queue()
        self.issued = 0
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        due = time.perf_counter()
        while True:
            level = self.tracker.current
            rate = (level.target if level else 0.0) * self.share
            if rate <= 0:
                gevent.sleep(0.05)
                due = time.perf_counter()
                continue
            due += interarrival_s(self.arrival, rate, self.rng)
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
