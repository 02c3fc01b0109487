"""`vlab experiment matrix FILE [--out DIR]`: a server-flag matrix (`vlab.core.matrix`): every cell's server started
in turn, the same scenario run against it, the server stopped, then one comparison report with the Pareto view.

The output folder holds `matrix.json` (the manifest: the cells' effective profiles, the scenario in force, and each
cell's status, exit code, server start time and error), `cells/<cell>/` (a run folder with the cell's
`profile.yaml`, `server.json`, `server.log` and its report) and `compare.html`. The last line printed is the
report's path.

Resumable: run the same command with the same `--out` after an interruption (Ctrl-C, SIGTERM, a killed process, a
lost machine) and it continues where it stopped. A cell whose status is `done` and whose folder still holds its run is
skipped; every other cell (never started, interrupted, or left `starting`/`running` by a killed process) is run from
scratch, its partial records cleared first. A folder holding another matrix (other cells or another scenario) is
refused. Delete a cell's folder to run it again. A cell whose server does not start is recorded as `server_failed`
and the matrix goes on; such cells are retried on the next run. Exit code: 0 when every cell is done with a completed
run, 1 when one failed, 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import yaml

from vlab.core.errors import ConfigError, UserError
from vlab.core.jsonsafe import json_safe
from vlab.core.matrix import Cell, MatrixSpec, load_matrix
from vlab.core.paths import REPORTS_DIR
from vlab.core.runfolder import (
    REPORT_HTML,
    REQUESTS_CSV,
    SERVER_LOG,
    clear_run,
    holds_run,
    new_run_dir,
    read_run_meta,
    write_json_atomic,
)
from vlab.core.scenario import Scenario, load_scenario

MATRIX_JSON = "matrix.json"
CELLS_DIR = "cells"
COMPARE_HTML = "compare.html"
PROFILE_YAML = "profile.yaml"
INTERRUPTED = (130, 143)
DONE = "done"


class Served(Protocol):
    """What a cell needs of its running server."""

    base_url: str
    startup_s: float | None


Starter = Callable[[Any, Path], AbstractContextManager[Served]]
"""(server profile, log path) → a running server for the block, stopped at its end."""


def start_vllm(profile: Any, log_path: Path) -> AbstractContextManager[Served]:
    """The real server: `server.launcher.start_server` on a free port, its process group stopped at the block's end."""
    from server.launcher import start_server
    from vlab.client.http import find_free_port

    return start_server(profile, port=find_free_port(), log_path=log_path)


def profile_source(name: str, matrix_file: Path) -> str | Path:
    """A profile name as it is, a profile file relative to the matrix file (or absolute)."""
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        return name
    path = Path(name).expanduser()
    return path if path.is_absolute() else matrix_file.parent / path


def cell_profiles(spec: MatrixSpec, source: Path) -> list[tuple[Cell, Any]]:
    """Each cell with its validated server profile (the base profile's keys with the overrides and the cell's name);
    one `ConfigError` line for an unknown key or a bad value, before any server starts."""
    from server.profile import ServerProfile, check_memory, load_profile, parse_profile

    known = [k for k in ServerProfile.model_fields if k not in ("name", "host", "port")]
    unknown = [k for k in spec.overrides if k not in ServerProfile.model_fields]
    if unknown:
        raise ConfigError(
            f"{source}: overrides: unknown profile key(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )
    out = []
    bases = {name: load_profile(profile_source(name, source)) for name in spec.profiles}
    for cell in spec.cells():
        data = {**bases[cell.profile].model_dump(), **cell.overrides, "name": cell.name}
        profile = parse_profile(data, f"{source}: cell {cell.name}")
        try:
            check_memory(profile)
        except ConfigError as exc:
            raise ConfigError(f"{source}: cell {cell.name}: {exc}") from None
        out.append((cell, profile))
    return out


# ------------------------------------------------------------------------------------------------- manifest
class Manifest:
    """matrix.json: what the matrix is (its identity: cells' profiles and the scenario) and how far it got."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder = folder
        self.data = data

    @classmethod
    def open(cls, folder: Path, identity: dict[str, Any]) -> Manifest:
        """The folder's manifest when it holds this matrix, a new one when it holds none; a `UserError` (exit 2)
        when it holds another."""
        path = folder / MATRIX_JSON
        if not path.exists():
            cells = [{"name": c["name"], "status": "pending", "attempts": 0} for c in identity["cells"]]
            return cls(folder, {**identity, "created_at": time.time(), "cells_state": cells})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})", exit_code=2) from None
        stored = _as_today(data)
        differs = [k for k in identity if json_safe(stored.get(k)) != json_safe(identity[k])]
        if differs:
            raise UserError(f"{folder} holds another matrix (its {', '.join(differs)} differ); use another --out",
                            exit_code=2)  # fmt: skip
        return cls(folder, {**data, **identity})

    def cell(self, name: str) -> dict[str, Any]:
        entry: dict[str, Any] = next(c for c in self.data["cells_state"] if c["name"] == name)
        return entry

    def update(self, name: str, **fields: Any) -> None:
        self.cell(name).update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated_at"] = time.time()
        write_json_atomic(self.folder / MATRIX_JSON, json_safe(self.data))


def _as_today(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored manifest's scenario and cell profiles read again with today's models, so that a key added to them
    since (with its default) does not make the folder another matrix; what no longer validates stays as stored, and
    differs."""
    from pydantic import BaseModel, ValidationError

    from server.profile import ServerProfile

    def today(model: type[BaseModel], value: Any) -> Any:
        try:
            return model.model_validate_json(json.dumps(value)).model_dump(mode="json")
        except (ValidationError, TypeError, ValueError):
            return value

    cells = [{**c, "profile": today(ServerProfile, c.get("profile"))} if isinstance(c, dict) else c
             for c in stored.get("cells") or []]  # fmt: skip
    return {**stored, "scenario": today(Scenario, stored.get("scenario")), "cells": cells}


def cell_dir(folder: Path, cell: Cell) -> Path:
    return folder / CELLS_DIR / cell.name


def is_done(manifest: Manifest, folder: Path, cell: Cell) -> bool:
    """Done in the manifest, and its folder still holds its records."""
    d = cell_dir(folder, cell)
    return manifest.cell(cell.name)["status"] == DONE and (d / REQUESTS_CSV).exists() and holds_run(d)


# ---------------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt for the block, so a terminated matrix stops its server and saves its state
    like Ctrl-C (`run_locust` forwards both to Locust while a run is going)."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cell(
    cell: Cell, profile: Any, scenario: Scenario, scenario_path: Path, folder: Path, manifest: Manifest,
    start: Starter,
) -> int:  # fmt: skip
    """Start the cell's server, run the scenario against it, stop the server; record every step in the manifest.
    Returns the run's exit code (1 for a server that did not start)."""
    from server.facts import facts_for
    from vlab.commands.runner import run_locust
    from vlab.core.server_facts import write_server_facts

    run_dir = cell_dir(folder, cell)
    run_dir.mkdir(parents=True, exist_ok=True)
    if holds_run(run_dir):  # a partial cell: run again from scratch
        clear_run(run_dir)
    (run_dir / PROFILE_YAML).write_text(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False))
    attempts = int(manifest.cell(cell.name).get("attempts", 0)) + 1
    manifest.update(cell.name, status="starting", attempts=attempts, started_at=time.time(), error=None, code=None)
    print(f"[{cell.name}] starting the server ...", flush=True)
    try:
        server_cm = start(profile, run_dir / SERVER_LOG)
        with server_cm as server:
            manifest.update(cell.name, status="running", startup_s=server.startup_s, url=server.base_url)
            print(f"[{cell.name}] healthy after {server.startup_s or 0:.1f} s on {server.base_url}; running "
                  f"{scenario.name}", flush=True)  # fmt: skip
            write_server_facts(run_dir, facts_for(profile))
            code = run_locust(scenario, scenario_path, run_dir, host=server.base_url, server_profile=profile.name,
                              overwrite=True)  # fmt: skip
    except UserError as exc:
        if exc.exit_code in INTERRUPTED:
            manifest.update(cell.name, status="interrupted", code=exc.exit_code, ended_at=time.time())
            raise KeyboardInterrupt from None
        started = manifest.cell(cell.name)["status"] == "running"
        manifest.update(cell.name, status="failed" if started else "server_failed", code=exc.exit_code,
                        error=str(exc), ended_at=time.time())  # fmt: skip
        print(f"[{cell.name}] {'failed' if started else 'server did not start'}: {exc}", file=sys.stderr, flush=True)
        return 1
    except BaseException:
        manifest.update(cell.name, status="interrupted", ended_at=time.time())
        raise
    print(f"[{cell.name}] server stopped", flush=True)
    if code in INTERRUPTED:
        manifest.update(cell.name, status="interrupted", code=code, ended_at=time.time())
        raise KeyboardInterrupt
    if not (run_dir / REQUESTS_CSV).exists():
        manifest.update(cell.name, status="failed", code=code, error="the run recorded nothing", ended_at=time.time())
        return 1
    status = read_run_meta(run_dir).status
    manifest.update(cell.name, status=DONE, code=code, run_status=status, ended_at=time.time())
    return code


def run_matrix(matrix_file: Path, out: Path | None = None, *, scenario_file: Path | None = None,
               start: Starter = start_vllm) -> int:  # fmt: skip
    """Run (or resume) the matrix into `out`; write the reports; return the exit code (module docstring)."""
    spec, scenario_path = load_matrix(matrix_file)
    scenario_path = scenario_file or scenario_path
    scenario = load_scenario(scenario_path)
    cells = cell_profiles(spec, matrix_file)  # every cell is checked before any server starts
    folder = out or new_run_dir(f"matrix-{spec.name}", REPORTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    identity = {
        "matrix": spec.model_dump(mode="json"),
        "scenario": scenario.model_dump(mode="json"),
        "cells": [{"name": c.name, "profile": p.model_dump(mode="json")} for c, p in cells],
    }
    manifest = Manifest.open(folder, identity)
    manifest.data["scenario_path"] = str(scenario_path)
    manifest.save()
    resume = f"vlab experiment matrix {matrix_file} --out {folder}"
    todo = [(c, p) for c, p in cells if not is_done(manifest, folder, c)]
    print(f"matrix {spec.name}: {len(cells)} cells, {len(cells) - len(todo)} done before, {len(todo)} to run; "
          f"folder {folder}", flush=True)  # fmt: skip
    for name in [c.name for c, _ in cells if is_done(manifest, folder, c)]:
        print(f"[{name}] done before: skipped", flush=True)
    codes = []
    try:
        with _sigterm_as_interrupt():
            for cell, profile in todo:
                codes.append(run_cell(cell, profile, scenario, scenario_path, folder, manifest, start))
                _cell_report(folder, cell, manifest)
    except KeyboardInterrupt:
        print(f"matrix interrupted: the cells done are kept; resume with: {resume}", file=sys.stderr, flush=True)
        return 130
    report = build_matrix_report(folder, [c for c, _ in cells], manifest)
    if report is not None:
        print(f"report: {report}")
    broken = [c for c, _ in cells if not is_done(manifest, folder, c)
              or manifest.cell(c.name).get("run_status") != "completed"]  # fmt: skip
    return 1 if broken or any(code != 0 for code in codes) else 0


def _cell_report(folder: Path, cell: Cell, manifest: Manifest) -> None:
    from analysis.report import build_report

    if not is_done(manifest, folder, cell):
        return
    try:
        build_report([cell_dir(folder, cell)], cell_dir(folder, cell) / REPORT_HTML)
    except UserError as exc:
        manifest.update(cell.name, error=f"report: {exc}")


def build_matrix_report(folder: Path, cells: list[Cell], manifest: Manifest) -> Path | None:
    """The comparison of the done cells (with the Pareto view) and the front printed; None with fewer than 2."""
    from analysis.pareto import pareto_front, points
    from analysis.pipeline import analyze
    from analysis.report import write_report

    done = [cell_dir(folder, c) for c in cells if is_done(manifest, folder, c)]
    if len(done) < 2:
        print(f"matrix: {len(done)} cell(s) done: no comparison (it needs 2)", flush=True)
        return done[0] / REPORT_HTML if done else None
    summaries = [analyze(d) for d in done]
    for line in format_cells(summaries):
        print(line, flush=True)
    front = pareto_front(points(summaries))
    print("Pareto front (output tok/s, tok/s per request): " + "; ".join(
        f"{p.label} {p.throughput:.1f}, {p.per_user:.1f}" for p in front))  # fmt: skip
    return write_report(summaries, folder / COMPARE_HTML)


def format_cells(summaries: list[Any]) -> list[str]:
    """One line per cell and level: output tok/s, per-user tok/s, TTFT p50, measured requests."""
    from analysis.pareto import config_labels, points

    lines = []
    labels = config_labels(summaries)
    width = max(len(x) for x in labels)
    for p in points(summaries):
        lines.append(f"{p.config:>{width}} {p.load:>10} | {p.throughput:8.1f} out tok/s | {p.per_user:6.1f} tok/s "
                     f"per request | TTFT p50 {p.ttft_p50:7.0f} ms | n {p.n}")  # fmt: skip
    return lines
