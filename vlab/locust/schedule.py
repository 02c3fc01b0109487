"""The open-loop arrival schedule of one process: tickets at the instants an arrival law draws.

One `ArrivalSchedule` per load process follows the level in force: for each level it draws that level's arrivals
(`vlab.core.arrivals.stage_offsets`: `stage.arrivals() × share` of them over that many / (rate × share) seconds)
and hands them out as tickets; `max_in_flight` slot users take tickets, so the achieved rate follows the schedule,
not the users' response times.

A ticket says when its request was due and whether every slot was busy at that instant. The request's
`queue_wait_ms` (send − due) is then either a wait for a free slot (`waited_for_slot`) or, when a slot was idle,
the generator's own dispatch lateness — a property of the load generator, reported apart.

A trace level (`load.stages[*].speed`, `data.trace`) takes its arrivals from the trace instead of a law: row i is due
(t_i − t_0) / speed after the level starts (`vlab.core.traces.Trace.offsets`), and its ticket names the row, so the
user sends that row's lengths and prefix blocks. Its `schedule_lag_ms` is then the send − the row's recorded time
(scaled), the replay's fidelity.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import gevent
from gevent.queue import Queue

from vlab.core.arrivals import ARRIVAL_LAWS, stage_offsets
from vlab.core.scenario import LoadConfig, Stage
from vlab.core.traces import Trace
from vlab.locust.background import Background
from vlab.locust.levels import LevelTracker


@dataclass(frozen=True, slots=True)
class Ticket:
    due: float
    """The perf_counter instant the arrival was due."""
    all_busy: bool
    """No slot user was waiting for a ticket when it was issued: the request waits for a slot."""
    row: int = -1
    """Trace replay: the index of the trace row to send (`vlab.core.traces.Trace.rows`); −1 otherwise."""


class ArrivalSchedule(Background):
    """Open-loop tickets for this process."""

    def __init__(
        self, load: LoadConfig, tracker: LevelTracker, share: float = 1.0, seed: str = "", trace: Trace | None = None
    ) -> None:
        self.load = load
        self.trace = trace
        """The trace replayed by `speed` levels (None for arrival laws)."""
        self.tracker = tracker
        self.share = share
        """This process's fraction of the global rate and count (1 / number of worker processes)."""
        self.rng = random.Random(f"arrivals:{seed}")
        self.law = ARRIVAL_LAWS[load.arrival.process]()
        self.tickets: Queue[Ticket] = Queue()
        self.issued = 0
        self.idle_slots = 0
        """Slot users waiting in `take` right now: zero at a ticket's due time means every slot is busy."""
        self.level_done: int | None = None
        """Index of the last level whose arrivals were all issued."""

    @property
    def idle(self) -> bool:
        """Every issued ticket has been taken."""
        return self.tickets.qsize() == 0

    def _run(self) -> None:
        done: int | None = None
        while True:
            level = self.tracker.current
            if level is None or level.index == done or level.index >= len(self.load.stages) or level.end_s:
                gevent.sleep(0.01)
                continue
            done = level.index
            stage = self.load.stages[level.index]
            rate = level.target * self.share
            n = round(stage.arrivals() * self.share)
            # The level began at level.start_s (wall clock); express that on the perf_counter clock.
            t0 = time.perf_counter() - (time.time() - level.start_s)
            for row, offset in self._arrivals(stage, rate, n):
                if self.tracker.current is not level:
                    break
                due = t0 + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
                self.tickets.put(Ticket(due, all_busy=self.idle_slots == 0, row=row))
                self.issued += 1
            self.level_done = level.index

    def _arrivals(self, stage: Stage, rate: float, n: int) -> list[tuple[int, float]]:
        """(trace row or −1, offset from the level start in seconds) of one level's arrivals in this process."""
        if stage.speed is None:
            return [(-1, t) for t in stage_offsets(self.law, rate, n, self.rng, self.load.arrival.burstiness)]
        assert self.trace is not None and stage.requests is not None
        if self.share != 1.0:
            raise ValueError("a trace replay runs in one load process")  # refused at start (vlab.locust.plugin)
        return list(enumerate(self.trace.offsets(stage.speed, stage.requests)))

    def take(self) -> Ticket:
        """Block until a ticket is due."""
        self.idle_slots += 1
        try:
            return self.tickets.get()
        finally:
            self.idle_slots -= 1
