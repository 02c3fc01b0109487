"""Who drives the user count: the scenario's levels (through a Locust `LoadTestShape`) or the web UI's form.

`driven_by_levels` is the one rule, used by the plugin at init and by the web UI when the scenario changes: a staged
or open-loop scenario, or any headless run, is walked by the level controller (`vlab.locust.controller`); a
single-stage closed-loop scenario in the web UI leaves the user count to the form, where every count started is a
level of its own.

`LevelShape` only relays: each tick it gives Locust the controller's `desired_users` at `load.spawn_rate` (Locust's
`-r`), and ends the test once the controller has walked every level. Every level's users are started before it
begins and wait at a closed gate, so a level is measured at its full count from its first second; the spawn rate sets
how long the start of a higher level waits for its new users (n new users at r users/s: about n / r seconds).
"""

from __future__ import annotations

from locust import LoadTestShape
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner

from vlab.core.scenario import Scenario
from vlab.locust.context import current


def driven_by_levels(scenario: Scenario, *, headless: bool, worker: bool) -> bool:
    """True when the scenario's levels (not the web UI's form) set the user count (see the module docstring)."""
    load = scenario.load
    return not worker and (headless or len(load.stages) > 1 or load.open_loop)


class LevelShape(LoadTestShape):
    """Relays the level controller's user count to Locust (see the module docstring)."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__()
        self.scenario = scenario

    def tick(self) -> tuple[int, float] | None:
        load = self.scenario.load
        ctx = current()
        controller = ctx.controller if ctx is not None else None
        if controller is None:  # before test start: the first level's users (they wait at the closed gate)
            first = load.stages[0]
            return (int(first.users) if first.users else load.arrival.max_in_flight), load.spawn_rate
        if controller.finished:
            _stop_workers_first(self.runner)
            return None
        return controller.desired_users, load.spawn_rate


def _stop_workers_first(runner: object) -> None:
    """On a master, stop the test with a stop message to the workers, so that they flush their last records
    before the master's test_stop. (Locust's headless quit path fires test_stop first and tells workers later.)"""
    if isinstance(runner, MasterRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()
