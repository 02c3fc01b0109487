"""Which load level is in force in this process, and whether users may start requests.

`LevelTracker` is read by users at send time and moved by the level controller (`vlab.locust.controller`) or, in a
form-driven web UI run, by the user count started from the form. Its `gate` is open while a level runs and closed
while one drains; its counters (`in_flight`, `ended`) let the controller end levels by request count and know when
a drain is done. Everything here runs on one gevent hub: no locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gevent.event import Event

from vlab.client.stream import RawStream
from vlab.core.runfolder import Level


@dataclass
class LevelTracker:
    """The level in force in this process and what its users are doing."""

    open_loop: bool
    levels: list[Level] = field(default_factory=list)
    gate: Event = field(default_factory=Event)
    """Set: users may start requests. Cleared while a level drains (and before the first level)."""
    in_flight: int = 0
    """Requests sent and not yet ended, in this process."""
    ended: dict[int, int] = field(default_factory=dict)
    """Per level index: requests of that level whose stream ended (ok or failed), in this process."""
    streams: dict[int, RawStream] = field(default_factory=dict)
    """The streams in flight (by id), read by the self-monitor for the live view (`vlab.locust.monitor`)."""
    ended_streams: list[RawStream] = field(default_factory=list)
    """Streams that ended since the monitor's last sample (their last reads are still to be counted)."""

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def current(self) -> Level | None:
        return self.levels[-1] if self.levels else None

    def enter(self, target: float, index: int | None = None, at: float | None = None) -> Level:
        """Start a new level (no-op when `target` and `index` match the current one, which is still open)."""
        now = time.time() if at is None else at
        cur = self.current
        if cur is not None and cur.target == target and (index is None or index == cur.index) and cur.end_s is None:
            return cur
        if cur is not None and cur.end_s is None:
            cur.end_s = now
            cur.ended_by = cur.ended_by or "ui"
        level = Level(index=len(self.levels) if index is None else index, target=target, start_s=now)
        self.levels.append(level)
        return level

    def close(self, at: float | None = None, ended_by: str = "stop") -> None:
        """End the current level (the run stopped)."""
        cur = self.current
        if cur is not None and cur.end_s is None:
            cur.end_s = time.time() if at is None else at
            cur.ended_by = cur.ended_by or ended_by

    def started(self, raw: RawStream) -> None:
        self.in_flight += 1
        self.streams[id(raw)] = raw

    def finished(self, raw: RawStream, level_index: int) -> None:
        """A request of `level_index` ended (its stream is over, ok or not)."""
        self.in_flight -= 1
        self.ended[level_index] = self.ended.get(level_index, 0) + 1
        if self.streams.pop(id(raw), None) is not None:
            self.ended_streams.append(raw)
