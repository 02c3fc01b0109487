"""Running one scenario as a headless Locust child process, with a live progress line: what `vlab sweep`, the
adaptive search, the demo, the experiments and the lab all call.

Locust runs in its own process group with the scenario's levels; its log goes to `RUN_DIR/locust.log` and its
`--csv` files to `RUN_DIR/locust_*.csv`. Ctrl-C or SIGTERM is passed on to Locust (as SIGTERM: a child started in
the background may ignore SIGINT), which records every request (in-flight ones as cut off) and marks the run
interrupted; `run_locust` then returns 130 (SIGINT) or 143 (SIGTERM).

The progress line (`Progress`) shows the level in force (from `levels.csv`, which the plugin rewrites when a level
starts), the elapsed time against the scenario's least total time, requests recorded and failed so far, the level's
p50 TTFT, and output tokens/s over the last `RATE_WINDOW_S` seconds from the events the load processes received
(`client_monitor.csv`), so it moves while streams are still in flight.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vlab.core.errors import ConfigError, UserError
from vlab.core.paths import REPO_ROOT
from vlab.core.processes import die_with_parent
from vlab.core.records import RequestRecord
from vlab.core.runfolder import LEVELS_CSV, LOCUST_CSV_PREFIX, LOCUST_LOG, MONITOR_CSV, REQUESTS_CSV
from vlab.core.scenario import TRACE_ONE_PROCESS, Scenario
from vlab.core.tail import CsvTail

LOCUSTFILE = REPO_ROOT / "locustfiles" / "llm.py"
RAG_LOCUSTFILE = REPO_ROOT / "locustfiles" / "rag_load.py"
RATE_WINDOW_S = 5.0
_COL = {name: i for i, name in enumerate(RequestRecord.columns())}


def locust_command(
    scenario: Scenario,
    scenario_path: Path,
    run_dir: Path,
    *,
    host: str | None = None,
    processes: int = 0,
    overrides: list[str] | None = None,
    server_profile: str | None = None,
    overwrite: bool = False,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The exact Locust command line of a headless run of the scenario (the report is built by the caller)."""
    if processes > 1 and scenario.load.replays_trace:
        raise ConfigError(TRACE_ONE_PROCESS)
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(RAG_LOCUSTFILE if scenario.data.rag else LOCUSTFILE),
        "--scenario", str(scenario_path),
        "--headless",
        "--run-dir", str(run_dir),
        "--csv", str(run_dir / LOCUST_CSV_PREFIX),
        "--only-summary",
        "--no-report",
        "--loglevel", "INFO",
    ]  # fmt: skip
    for item in overrides or []:
        cmd += ["--set", item]
    if host:
        cmd += ["--host", host]
    if processes:
        cmd += ["--processes", str(processes)]
    if server_profile:
        cmd += ["--server-profile", server_profile]
    if overwrite:
        cmd.append("--overwrite")
    return cmd + (extra_args or [])


def run_locust(
    scenario: Scenario,
    scenario_path: Path,
    run_dir: Path,
    *,
    host: str | None = None,
    processes: int = 0,
    overrides: list[str] | None = None,
    server_profile: str | None = None,
    overwrite: bool = False,
    extra_args: list[str] | None = None,
    quiet: bool = False,
) -> int:
    """Run Locust headless on the scenario; block until it ends, showing progress on stderr; return its exit code
    (0 completed, 1 failed, 2 bad input, 130/143 interrupted). A mistake the suite reported in one line (bad
    scenario, unreachable server, unknown model) is raised as that line (`UserError`, with Locust's exit code)."""
    cmd = locust_command(
        scenario, scenario_path, run_dir, host=host, processes=processes, overrides=overrides,
        server_profile=server_profile, overwrite=overwrite, extra_args=extra_args,
    )  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOCUST_LOG
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    received: list[int] = []
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT, preexec_fn=die_with_parent
        )

        def forward(signum: int, _frame: object) -> None:
            received.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            progress = Progress(scenario, run_dir, quiet=quiet)
            while child.poll() is None:
                progress.show()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1.0)
            progress.show(final=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if child.poll() is None:  # we are leaving abnormally: never leave Locust behind
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    code = child.returncode
    if received:
        print(f"\ninterrupted: partial records kept in {run_dir}", file=sys.stderr)
        return 143 if received[0] == signal.SIGTERM else 130
    error = _error_line(log_path, start_offset)
    if error:  # a mistake the suite reported in one line (bad scenario, unreachable server, unknown model, ...)
        raise UserError(error, exit_code=code if code in (1, 2) else 1)
    if code < 0 or code not in (0, 1, 2, 130, 143):
        raise UserError(f"Locust failed (exit {code}); see {log_path}")
    return code


def _error_line(log_path: Path, start: int) -> str:
    """The last `vlab: error:` line this run wrote (older runs' lines before `start` are not read)."""
    with log_path.open("rb") as fh:
        fh.seek(start)
        lines = fh.read().decode("utf-8", "replace").splitlines()
    errors = [line.removeprefix("vlab: error: ") for line in lines if line.startswith("vlab: error:")]
    return errors[-1] if errors else ""


def recent_rate(events: dict[str, list[tuple[float, float]]], now: float) -> float:
    """Token events per second over the last RATE_WINDOW_S seconds of each node's samples, summed over nodes.

    Each node's window ends at its newest sample, not at `now`: worker samples reach the file in batches (up to ~1 s
    late), and a window ending at `now` would miss the late ones (at 4 processes the line read ~30% low). A node
    silent for longer than the window counts 0."""
    rate = 0.0
    for samples in events.values():
        newest = samples[-1][0]
        if now - newest <= RATE_WINDOW_S:
            rate += sum(n for t, n in samples if newest - t < RATE_WINDOW_S) / RATE_WINDOW_S
    return rate


class Progress:
    """One status line from the files the run is writing (see the module docstring)."""

    def __init__(self, scenario: Scenario, run_dir: Path, quiet: bool = False) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.requests = CsvTail(run_dir / REQUESTS_CSV)
        self.monitor = CsvTail(run_dir / MONITOR_CSV)
        self.rows: list[list[str]] = []
        self.events: dict[str, list[tuple[float, float]]] = {}
        """Per node: (sample time, token events received in the sample's interval), from client_monitor.csv."""
        self.started = time.time()
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.last_print = 0.0

    def _level(self) -> tuple[str, str]:
        """(index, target) of the level in force: the last row of levels.csv without an end."""
        try:
            with (self.run_dir / LEVELS_CSV).open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError:
            return "-", "-"
        open_rows = [r for r in rows if not r.get("end_s")]
        row = open_rows[-1] if open_rows else (rows[-1] if rows else None)
        if row is None:
            return "-", "-"
        draining = not open_rows
        return row["level"] + (" draining" if draining else ""), f"{float(row['target']):g}"

    def line(self, now: float) -> str:
        self.rows += [r for r in self.requests.read_new() if len(r) == len(_COL)]
        header = self.monitor.header
        for row in self.monitor.read_new():
            header = self.monitor.header
            if header and "events_rx" in header and len(row) == len(header):
                with contextlib.suppress(ValueError):
                    sample = (float(row[header.index("t_s")]), float(row[header.index("events_rx")]))
                    self.events.setdefault(row[header.index("node")], []).append(sample)
        level, target = self._level()
        index = level.split()[0]
        ok = [r for r in self.rows if r[_COL["ok"]] == "1"]
        failed = sum(
            1 for r in self.rows if r[_COL["ok"]] != "1" and r[_COL["error_kind"]] not in ("cut_off", "rate_limited")
        )
        ttfts = [float(r[_COL["ttft_ms"]]) for r in ok if r[_COL["level"]] == index and r[_COL["ttft_ms"]]]
        ttft = float(np.median(ttfts)) if ttfts else math.nan
        rate = recent_rate(self.events, now)
        elapsed = now - self.started
        least = self.scenario.load.duration_s
        clock = (
            f"{min(elapsed, least):5.0f}s / {least:.0f}s" if elapsed <= least else f"{elapsed:5.0f}s (≥ {least:.0f}s)"
        )
        unit = "req/s" if self.scenario.load.open_loop else "users"
        return (
            f"level {level} ({target} {unit}) | {clock} | requests {len(self.rows)}, failed {failed} | "
            f"p50 TTFT {ttft:7.1f} ms | ~{rate:8.1f} out tok/s (last {RATE_WINDOW_S:g} s)"
        )

    def show(self, final: bool = False) -> None:
        now = time.time()
        if self.quiet or (not final and not self.tty and now - self.last_print < 5):
            return
        self.last_print = now
        text = self.line(now)
        if self.tty and not final:
            print("\r" + text, end="", file=sys.stderr, flush=True)
        else:
            print(("\r" if self.tty else "") + text, file=sys.stderr, flush=True)
