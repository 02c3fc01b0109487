"""The run context: everything one Locust process of a run shares. Importing this module registers nothing.

Data flows one way: scenario → `RunContext` (prompt factory, level controller, arrival schedule) → users →
records (finisher → sink). The plugin (`vlab.locust.plugin`) builds the context at init and fills it at test start;
users, the shape and the web UI only read it through `context()`.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from vlab.client.api import Credentials, ServerInfo
from vlab.core.runfolder import LostWorker
from vlab.core.scenario import Scenario
from vlab.locust.levels import LevelTracker

if TYPE_CHECKING:
    from vlab.locust.controller import Cluster, LevelController
    from vlab.locust.finisher import Finisher
    from vlab.locust.monitor import ClientMonitor
    from vlab.locust.schedule import ArrivalSchedule
    from vlab.locust.sink import BatchReceiver, CsvSink, MessageSink
    from vlab.locust.workload import PromptFactory


@dataclass
class RunContext:
    """What a process of the run shares: the scenario and what was derived from it at start."""

    scenario: Scenario
    scenario_path: Path
    environment: Environment
    node: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    tracker: LevelTracker = field(init=False)
    run_dir: Path | None = None
    server: ServerInfo | None = None
    creds: Credentials = field(default_factory=Credentials)
    factory: PromptFactory | None = None
    prompt_lengths: str = ""
    """How synthetic prompt lengths are made exact ("server /tokenize", "local tokenizer …", "approximate")."""
    sink: CsvSink | MessageSink | None = None
    finisher: Finisher | None = None
    """Turns ended streams into records off the read path (load-generating processes only)."""
    receiver: BatchReceiver | None = None
    """On the master: takes the workers' record batches."""
    cluster: Cluster | None = None
    """On a master: the workers as the controller sees them (`vlab.locust.cluster.MasterCluster`)."""
    controller: LevelController | None = None
    """Walks the scenario's levels (headless and staged runs; on the master or the only process)."""
    workers_lost: list[LostWorker] = field(default_factory=list)
    schedule: ArrivalSchedule | None = None
    share: float = 1.0
    """This worker's share of an open-loop rate (1 / number of workers)."""
    monitor: ClientMonitor | None = None
    samplers: list[Any] = field(default_factory=list)
    """Sampler processes (server /metrics, GPU), on the master or the only process."""
    dataset_summary: dict[str, Any] | None = None
    wants_locust_csv: bool = False
    """A headless run without --csv: Locust's CSV files go into the run folder."""
    locust_csv: Any = None
    """Locust's `StatsCSVFileWriter` for them."""
    start_error: str | None = None
    """Why the test could not start (one line), when it could not."""
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _users: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.tracker = LevelTracker(open_loop=self.scenario.load.open_loop)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    @property
    def host(self) -> str:
        return str(self.environment.host)

    def next_request_id(self) -> str:
        return f"{self.node}-{next(self._seq)}"

    def next_user_index(self) -> int:
        return next(self._users)


_CONTEXT: RunContext | None = None


def context() -> RunContext:
    """The process's run context (set by the plugin at init)."""
    if _CONTEXT is None:
        raise RuntimeError("the vlab Locust plugin is not initialised (no --scenario?)")
    return _CONTEXT


def current() -> RunContext | None:
    """The run context, or None before the plugin's init."""
    return _CONTEXT


def set_context(ctx: RunContext | None) -> None:
    global _CONTEXT
    _CONTEXT = ctx
