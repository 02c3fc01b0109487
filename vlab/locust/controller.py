"""The level controller: walks the scenario's levels on the master (or the only process) of a staged run.

For each stage, in order:

1. ask for the stage's users (the shape, `vlab.locust.shape`, hands the count to Locust) and wait until they run
   (at most `SPAWN_WAIT_S`): users spawned early wait at the closed gate, so the level starts with all of them;
2. start the level (stamped now; workers are told with the same index and start time) and open the gate;
3. end it when its `duration` has passed and its `requests` have ended (whichever comes last; open loop: when its
   arrivals have been issued), or at its cap (`max_duration`), or when the run stops;
4. drain (`load.drain`): close the gate, so no request starts, and wait until every request in flight — and, open
   loop, every issued ticket — has ended (at most `drain_timeout_s`). Nothing is cut off between levels, and the next
   level's window holds only its own requests.

Distributed runs: workers report their ended-request counts every `PROGRESS_S` and answer a drain with "drained"
once their own in-flight requests are over; the master decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

from vlab.core.runfolder import Level
from vlab.core.scenario import LoadConfig, Stage
from vlab.locust.background import Background
from vlab.locust.levels import LevelTracker

log = logging.getLogger("vlab")

POLL_S = 0.05
SPAWN_WAIT_S = 30.0
"""Longest wait for a level's users to be running before the level starts anyway."""
PROGRESS_S = 0.5
"""How often workers report their ended-request counts."""


class Cluster:
    """What the controller needs from the processes that generate load (this one, or the workers)."""

    def user_count(self) -> int:
        raise NotImplementedError

    def ended(self, index: int) -> int:
        """Requests of level `index` that ended, all processes together."""
        raise NotImplementedError

    def start_level(self, level: Level) -> None:
        raise NotImplementedError

    def drain(self, index: int) -> None:
        """Close the gates; `drained` turns true once every process's requests of the level are over."""
        raise NotImplementedError

    def drained(self, index: int) -> bool:
        raise NotImplementedError


class LevelController(Background):
    """See the module docstring. `desired_users` is what the shape asks Locust for; `finished` ends the shape."""

    def __init__(
        self,
        load: LoadConfig,
        tracker: LevelTracker,
        cluster: Cluster,
        *,
        on_level: Callable[[Level], None] | None = None,
        time_limit_s: float | None = None,
    ) -> None:
        self.load = load
        self.tracker = tracker
        self.cluster = cluster
        self.on_level = on_level or (lambda _level: None)
        """Called when a level starts and when it ends (e.g. to rewrite levels.csv)."""
        self.time_limit_s = time_limit_s
        """`-t`: the whole run ends after this many seconds (the level in force ends 'stop', then drains)."""
        self.desired_users = self._users(load.stages[0])
        self.finished = False
        self.stopping = False
        self.started_at = time.time()
        self.notes: list[str] = []
        """One line per level that could not reach its request count within its cap, or did not drain."""

    def _users(self, stage: Stage) -> int:
        return int(stage.users) if stage.users is not None else self.load.arrival.max_in_flight

    def stop(self) -> None:
        """The run is stopping (Ctrl-C, SIGTERM, the UI): end the level in force now."""
        self.stopping = True
        super().stop()

    def _run(self) -> None:
        self.started_at = time.time()
        try:
            for index, stage in enumerate(self.load.stages):
                if self._over_time():
                    break
                self._start(index, stage)
                level = self.tracker.current
                assert level is not None
                level.ended_by = self._wait_end(index, stage, level)
                level.end_s = time.time()
                self.on_level(level)
                if level.ended_by == "cap":
                    self.notes.append(
                        f"level {index} ({stage.target:g}) ended at its cap of {stage.cap_s:g} s with "
                        f"{self.cluster.ended(index)} of its {stage.requests} requests ended"
                    )
                if self.load.drain:
                    self._drain(index)
                if level.ended_by == "stop":
                    break
        finally:
            self.finished = True

    def _over_time(self) -> bool:
        return self.time_limit_s is not None and time.time() - self.started_at >= self.time_limit_s

    def _start(self, index: int, stage: Stage) -> None:
        self.desired_users = self._users(stage)
        deadline = time.monotonic() + SPAWN_WAIT_S
        while self.cluster.user_count() < self.desired_users and time.monotonic() < deadline:
            gevent.sleep(POLL_S)
        level = self.tracker.enter(stage.target, index, at=time.time())
        self.cluster.start_level(level)
        self.tracker.gate.set()
        self.on_level(level)

    def _wait_end(self, index: int, stage: Stage, level: Level) -> str:
        """Block until the level should end; return why (`vlab.core.runfolder.LevelEnd`)."""
        open_loop = stage.rate is not None
        needed_s = stage.min_s
        if open_loop:  # the level lasts as long as its arrivals take at the target rate
            needed_s = max(needed_s, stage.arrivals() / float(stage.rate or 1.0))
        while True:
            elapsed = time.time() - level.start_s
            if self.stopping or self._over_time():
                return "stop"
            count_ok = open_loop or stage.requests is None or self.cluster.ended(index) >= stage.requests
            if elapsed >= needed_s and count_ok:
                return (
                    "requests" if stage.requests is not None and not open_loop and elapsed > needed_s + 0.1 else "time"
                )
            if elapsed >= stage.cap_s:
                return "cap"
            gevent.sleep(POLL_S)

    def _drain(self, index: int) -> None:
        self.tracker.gate.clear()
        self.cluster.drain(index)
        deadline = time.monotonic() + self.load.drain_timeout_s
        while not self.cluster.drained(index):
            if self.stopping or time.monotonic() > deadline:
                if not self.stopping:
                    self.notes.append(f"level {index} did not drain within {self.load.drain_timeout_s:g} s")
                return
            gevent.sleep(POLL_S)
