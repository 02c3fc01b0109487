"""The suite's Locust options, and what Locust's own options mean with a scenario.

The suite adds (Locust's `init_command_line_parser` mechanism): `--scenario FILE`, `--run-dir DIR`, `--overwrite`,
`--set KEY=VALUE` (repeatable), `--server-profile NAME` and `--no-report`.

With a scenario, Locust's options keep their meaning where the scenario leaves room, and are refused where they would
silently be ignored:

| option | with a scenario |
|---|---|
| `-u N` | replaces the stages by one closed-loop level of N users (for `-t`, else the scenario's least total time);
  refused for an open-loop scenario (use `--set load.stages.0.rate=R`) |
| `-r R` | the spawn rate (`load.spawn_rate`) |
| `-t T` | with `-u`: that level's duration; alone: the whole run ends after T (the level in force ends, drains, and
  the run is `completed`) |
| `--headless`, `--autostart` | as in Locust: the scenario's levels run without (or with) the web UI |
| `--processes N`, `--master`/`--worker` | as in Locust; records are collected on the master |
| `--csv PREFIX`, `--html FILE` | as in Locust; a headless run writes `RUN_DIR/locust_*.csv` when `--csv` is not given |

`effective_scenario` applies `--set` first, then `-u/-t/-r`; the result is what the run records in run.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlab.core.errors import ConfigError
from vlab.core.scenario import Scenario, apply_overrides, parse_scenario, read_scenario_file, resolve_files


def add_arguments(parser: Any) -> None:
    """The suite's options, in their own group of `--help`."""
    group = parser.add_argument_group("vllm-inference-lab", "Options of the suite (locustfiles/*.py)")
    group.add_argument(
        "--scenario", type=str, env_var="LOCUST_SCENARIO", default="", help="Scenario YAML file (required)."
    )
    group.add_argument(
        "--run-dir",
        type=str,
        env_var="LOCUST_RUN_DIR",
        default="",
        help="Run folder (default: reports/<time>-<scenario name>). A folder that already holds a run is refused.",
    )
    group.add_argument(
        "--overwrite", action="store_true", default=False, help="Replace the run already in --run-dir, whole."
    )
    group.add_argument(
        "--set",
        dest="scenario_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one scenario key, e.g. --set data.output_tokens=256 (repeatable; checked like the YAML).",
    )
    group.add_argument(
        "--server-profile",
        type=str,
        default="",
        help="Name of the server profile the run targets, recorded in run.json (set by vlab's own commands).",
    )
    group.add_argument(
        "--no-report", action="store_true", default=False, help="Headless runs: skip the HTML report at the end."
    )


@dataclass(frozen=True)
class Effective:
    """The scenario a run uses, and the overall time limit `-t` sets when it does not size a level."""

    scenario: Scenario
    time_limit_s: float | None
    notes: tuple[str, ...]


def effective_scenario(path: str, options: Any) -> Effective:
    """The scenario file with `--set` and Locust's `-u/-r/-t` applied (see the module docstring); one `ConfigError`
    line for a combination that cannot mean what the user expects."""
    raw = apply_overrides(read_scenario_file(Path(path)), list(getattr(options, "scenario_set", None) or []))
    scenario = parse_scenario(raw, path)
    users = getattr(options, "num_users", None)
    spawn_rate = getattr(options, "spawn_rate", None)
    run_time = getattr(options, "run_time", None)
    notes: list[str] = []
    load = raw.setdefault("load", {})
    time_limit: float | None = None
    if users is not None:
        if scenario.load.open_loop:
            raise ConfigError(
                f"-u {users}: {path} is an open-loop scenario (rate stages); set its rate with "
                "--set load.stages.0.rate=R, or drop -u"
            )
        duration = float(run_time) if run_time else scenario.load.duration_s or None
        stage: dict[str, Any] = {"users": int(users)}
        if duration:
            stage["duration"] = duration
        else:
            stage.update({k: v for k, v in raw["load"]["stages"][0].items() if k in ("requests", "max_duration")})
        for key in ("users", "rate", "duration", "requests", "max_duration"):
            load.pop(key, None)
        load["stages"] = [stage]
        notes.append(f"-u {users}{f' -t {run_time:g}s' if run_time else ''}: one level of {users} users")
    elif run_time:
        time_limit = float(run_time)
        notes.append(f"-t {run_time:g}s: the run ends after {run_time:g} s")
    if spawn_rate is not None:
        load["spawn_rate"] = float(spawn_rate)
    if users is not None or spawn_rate is not None:
        scenario = parse_scenario(raw, path)
    return Effective(resolve_files(scenario, Path(path)), time_limit, tuple(notes))
