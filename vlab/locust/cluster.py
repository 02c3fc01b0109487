"""The load processes as the level controller sees them: this process alone, or a master and its workers.

Messages between a master and its workers (Locust's own messaging), each validated on arrival:

| message | from → to | data (`pydantic` model) |
|---|---|---|
| `vlab_level` | master → workers | `LevelMessage`: start level `index` of `target` at `start_s` (`share`: of a rate) |
| `vlab_drain` | master → workers | `DrainMessage`: close the gate; answer `vlab_drained` once nothing is in flight |
| `vlab_drained` | worker → master | `DrainedMessage` |
| `vlab_progress` | worker → master | `ProgressMessage`: requests ended per level so far, every `PROGRESS_S` |
| `vlab_records` | worker → master | `vlab.locust.sink.RecordBatch` |
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from pydantic import BaseModel, ConfigDict, ValidationError

from vlab.core.runfolder import Level
from vlab.locust.context import RunContext
from vlab.locust.controller import PROGRESS_S, Cluster

log = logging.getLogger("vlab")

LEVEL_MESSAGE = "vlab_level"
DRAIN_MESSAGE = "vlab_drain"
DRAINED_MESSAGE = "vlab_drained"
PROGRESS_MESSAGE = "vlab_progress"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LevelMessage(_Message):
    index: int
    target: float
    start_s: float
    share: float = 1.0


class DrainMessage(_Message):
    index: int


class DrainedMessage(_Message):
    node: str
    index: int


class ProgressMessage(_Message):
    node: str
    ended: dict[int, int]


def _idle(ctx: RunContext, index: int) -> bool:
    """Nothing of this process is in flight and, open loop, every arrival of level `index` has been issued and
    taken: the level is over here."""
    if ctx.tracker.in_flight > 0:
        return False
    schedule = ctx.schedule
    done = schedule.level_done if schedule is not None and schedule.level_done is not None else -1
    return schedule is None or (schedule.idle and done >= index)


class LocalCluster(Cluster):
    """One process generates the load."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def user_count(self) -> int:
        runner = self.ctx.environment.runner
        return int(runner.user_count) if runner is not None else 0

    def ended(self, index: int) -> int:
        return self.ctx.tracker.ended.get(index, 0)

    def start_level(self, level: Level) -> None:
        pass

    def drain(self, index: int) -> None:
        pass

    def drained(self, index: int) -> bool:
        return _idle(self.ctx, index)


class MasterCluster(Cluster):
    """A master and its workers (`--processes N`, `--master`/`--worker`)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.progress: dict[str, dict[int, int]] = {}
        self.drained_nodes: dict[int, set[str]] = {}
        runner: Any = ctx.environment.runner
        runner.register_message(PROGRESS_MESSAGE, self._on_progress)
        runner.register_message(DRAINED_MESSAGE, self._on_drained)

    def _runner(self) -> Any:
        return self.ctx.environment.runner

    def user_count(self) -> int:
        return int(self._runner().user_count)

    def ended(self, index: int) -> int:
        return sum(counts.get(index, 0) for counts in self.progress.values())

    def start_level(self, level: Level) -> None:
        send_level(self.ctx, level)

    def drain(self, index: int) -> None:
        self.drained_nodes[index] = set()
        self._runner().send_message(DRAIN_MESSAGE, DrainMessage(index=index).model_dump())

    def drained(self, index: int) -> bool:
        runner = self._runner()
        live = len(runner.clients.all) - len(runner.clients.missing)
        return len(self.drained_nodes.get(index, ())) >= live

    def _on_progress(self, environment: Any, msg: Any, **_kw: Any) -> None:
        try:
            data = ProgressMessage.model_validate(msg.data)
        except ValidationError:
            return
        self.progress[data.node] = data.ended

    def _on_drained(self, environment: Any, msg: Any, **_kw: Any) -> None:
        try:
            data = DrainedMessage.model_validate(msg.data)
        except ValidationError:
            return
        self.drained_nodes.setdefault(data.index, set()).add(data.node)


def send_level(ctx: RunContext, level: Level) -> None:
    """Tell every worker to start `level` (same index and start time everywhere; an open-loop worker takes
    1/workers of the rate)."""
    runner: Any = ctx.environment.runner
    workers = max(runner.worker_count, 1)
    message = LevelMessage(index=level.index, target=level.target, start_s=level.start_s, share=1.0 / workers)
    runner.send_message(LEVEL_MESSAGE, message.model_dump())


# ------------------------------------------------------------------------------------------------------- workers
def install_worker(ctx: RunContext) -> None:
    """On a worker: follow the master's levels and drains, and report progress."""
    runner: Any = ctx.environment.runner

    def on_level(environment: Any, msg: Any, **_kw: Any) -> None:
        data = LevelMessage.model_validate(msg.data)
        ctx.tracker.enter(data.target, data.index, at=data.start_s)
        ctx.share = data.share
        if ctx.schedule is not None:
            ctx.schedule.share = data.share
        ctx.tracker.gate.set()

    def on_drain(environment: Any, msg: Any, **_kw: Any) -> None:
        data = DrainMessage.model_validate(msg.data)
        ctx.tracker.gate.clear()

        def wait_and_answer() -> None:
            while not _idle(ctx, data.index):
                gevent.sleep(0.05)
            runner.send_message(DRAINED_MESSAGE, DrainedMessage(node=ctx.node, index=data.index).model_dump())

        gevent.spawn(wait_and_answer)

    def report_progress() -> None:
        while True:
            gevent.sleep(PROGRESS_S)
            message = ProgressMessage(node=ctx.node, ended=dict(ctx.tracker.ended))
            runner.send_message(PROGRESS_MESSAGE, message.model_dump())

    runner.register_message(LEVEL_MESSAGE, on_level)
    runner.register_message(DRAIN_MESSAGE, on_drain)
    gevent.spawn(report_progress)
