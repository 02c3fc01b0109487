"""The finisher: turns ended streams into records between socket reads, never in a burst.

Parsing a finished 256-token stream and building its record costs ~1 ms of CPU (docs/performance.md). Done on the
user's greenlet right after the last byte, it ran at the worst moment: streams that start together end together
(one decode batch, one spawn ramp), and a hundred of them parsed back to back held the gevent hub for 100–300 ms.
Every other open stream was then read late; kernel receive stamps keep each event's time right only until two
events of one stream land in one read, after which they share a stamp and the ITL is off by a whole interval.

So a user hands its ended stream over (`submit`) and sends its next request at once. One greenlet per load process
works the queue off in slices of at most `SLICE_S` of CPU; between slices it waits on a low-priority timer, which
libev runs only after every socket that became readable meanwhile has been served. Reads therefore never wait
behind more than one slice. If the queue grows past `MAX_BACKLOG` (the process cannot keep up: its self-monitoring
says so) jobs run on the submitting greenlet again, which bounds memory and slows a closed loop down. A finisher made
with `deferred=False` always does that: each stream is finished on its user's greenlet, as before this module
(`VLAB_FINISH=inline`, for the client benchmark's A/B).

`drain` runs whatever is still queued; the plugin calls it at test stop, before the sinks' last flush, so no record
is ever lost to the deferral.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

log = logging.getLogger("vlab")

SLICE_S = 0.002
"""CPU time the finisher may hold the hub before it lets pending reads run, seconds."""
YIELD_S = 0.0002
"""Length of the timer the finisher waits on between slices, seconds (the wait is for the loop, not the time)."""
LOW_PRIORITY = -2
"""libev's lowest watcher priority: invoked after all pending I/O of the same loop iteration."""
MAX_BACKLOG = 1024
"""Queued jobs beyond which `submit` runs the job at once (back-pressure)."""


class Finisher:
    """A queue of jobs run off the read path; each job's outcome in the `AsyncResult` that `submit` returns."""

    def __init__(self, slice_s: float = SLICE_S, deferred: bool = True) -> None:
        self.slice_s = slice_s
        self.deferred = deferred
        self._jobs: deque[tuple[Callable[[], Any], AsyncResult]] = deque()
        self._wake = Event()
        self._hub = gevent.get_hub()
        self.inline = 0
        """Jobs run on the submitting greenlet (back-pressure, or not `deferred`)."""
        self._greenlet = gevent.spawn(self._run)

    @property
    def backlog(self) -> int:
        return len(self._jobs)

    def submit(self, job: Callable[[], Any]) -> AsyncResult:
        """Queue `job`; its return value (or exception) arrives in the returned AsyncResult."""
        outcome = AsyncResult()
        if not self.deferred or len(self._jobs) >= MAX_BACKLOG:
            self.inline += 1
            _run_job(job, outcome)
        else:
            self._jobs.append((job, outcome))
            self._wake.set()
        return outcome

    def drain(self) -> None:
        """Run every queued job now, on the calling greenlet."""
        while self._jobs:
            _run_job(*self._jobs.popleft())

    def close(self) -> None:
        """Drain, then stop the finisher's greenlet."""
        self.drain()
        self._greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            deadline = time.perf_counter() + self.slice_s
            while self._jobs and time.perf_counter() < deadline:
                _run_job(*self._jobs.popleft())
            if self._jobs:
                self._yield_to_reads()
            else:
                self._wake.clear()

    def _yield_to_reads(self) -> None:
        timer = self._hub.loop.timer(YIELD_S, priority=LOW_PRIORITY)
        try:
            self._hub.wait(timer)
        finally:
            timer.close()


def _run_job(job: Callable[[], Any], outcome: AsyncResult) -> None:
    try:
        outcome.set(job())
    except Exception as exc:  # a bug in a job: logged, and handed to whoever waits for it
        log.exception("vlab: error while finishing a request")
        outcome.set_exception(exc)
