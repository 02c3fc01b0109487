"""`vlab sweep`: run a scenario's load levels in one headless Locust run, show progress, then build the report.

Locust runs as a child process in its own process group with the scenario's staged shape; its log goes to
`RUN_DIR/locust.log` and its `--csv` files to `RUN_DIR/locust_*.csv`. The terminal shows the level in force,
elapsed/remaining time and live p50 TTFT and output tokens/s, read from the records the run is writing. Ctrl-C or
SIGTERM is passed on to Locust, which records every request (in-flight ones as cut off) and marks the run
interrupted; the report is then built from what was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vlab.core.errors import UserError
from vlab.core.paths import REPO_ROOT
from vlab.core.records import REQUESTS_CSV, RequestRecord
from vlab.core.runfolder import new_run_dir
from vlab.core.scenario import Scenario, load_scenario

LOCUSTFILE = REPO_ROOT / "locustfiles" / "llm.py"
RAG_LOCUSTFILE = REPO_ROOT / "locustfiles" / "rag_load.py"
_COLUMNS = RequestRecord.columns()
_COL = {name: i for i, name in enumerate(_COLUMNS)}


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="Run a scenario's load levels headless, then build the report.", description=__doc__
    )
    parser.add_argument("scenario", type=Path, help="Scenario YAML file.")
    parser.add_argument("--host", help="Server base URL (default: the scenario's api.host, else 127.0.0.1:8000).")
    parser.add_argument("--run-dir", type=Path, help="Run folder (default: reports/<time>-<scenario name>).")
    parser.add_argument("--processes", type=int, default=0, help="Locust worker processes on this machine.")
    parser.add_argument("--no-report", action="store_true", help="Skip building the HTML report.")
    parser.add_argument(
        "--adaptive",
        action="store_true",
        help="Find the highest load meeting the scenario's SLOs: double from the first stage, then bisect.",
    )
    parser.add_argument("--max-probes", type=int, default=10, help="Adaptive mode: at most this many probe runs.")
    parser.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    run_dir = args.run_dir or new_run_dir(scenario.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.adaptive:
        return _adaptive(args, scenario, run_dir)
    code = run_locust(scenario, args.scenario, run_dir, host=args.host, processes=args.processes)
    if not (run_dir / REQUESTS_CSV).exists():
        raise UserError(f"the run recorded nothing (Locust exited with {code}); see {run_dir / 'locust.log'}")
    if not args.no_report:
        from analysis.report import build_report

        report = build_report([run_dir], run_dir / "index.html")
        print(f"report: {report}")
    return code


def _adaptive(args: argparse.Namespace, scenario: Scenario, run_dir: Path) -> int:
    from vlab.commands.adaptive import adaptive_search

    best, probes = adaptive_search(
        scenario, run_dir, host=args.host, processes=args.processes, max_probes=args.max_probes
    )
    unit = "req/s" if scenario.load.open_loop else "users"
    if best is None:
        print(f"adaptive: no probed load met the SLO (lowest tried: {min(p.target for p in probes):g} {unit})")
    else:
        print(
            f"adaptive: highest load meeting the SLO: {best.target:g} {unit}, goodput "
            f"{best.goodput_req_per_s:.2f} req/s ({best.slo_fraction:.0%} of requests meeting it)"
        )
    if probes and not args.no_report:
        from analysis.report import build_report

        ordered = sorted(probes, key=lambda p: p.target)
        print(f"report: {build_report([Path(p.run_dir) for p in ordered], run_dir / 'index.html')}")
    return 0


def run_locust(
    scenario: Scenario,
    scenario_path: Path,
    run_dir: Path,
    *,
    host: str | None = None,
    processes: int = 0,
    extra_args: list[str] | None = None,
) -> int:
    """Run Locust headless on the scenario; return its exit code (0: no failed request, 1: some failed, 2: bad
    input). Blocks until the run ends, showing progress on stderr."""
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(RAG_LOCUSTFILE if scenario.data.rag else LOCUSTFILE),
        "--scenario", str(scenario_path),
        "--headless",
        "--run-dir", str(run_dir),
        "--csv", str(run_dir / "locust"),
        "--only-summary",
        "--loglevel", "INFO",
    ]  # fmt: skip
    if host:
        cmd += ["--host", host]
    if processes:
        cmd += ["--processes", str(processes)]
    cmd += extra_args or []
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "locust.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)
        interrupted = False

        def forward(signum, _frame):
            nonlocal interrupted
            interrupted = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)  # SIGINT may be ignored in a child started in the background

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            progress = Progress(scenario, run_dir / REQUESTS_CSV)
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
    if interrupted:
        print(f"\nsweep interrupted: partial records kept in {run_dir}", file=sys.stderr)
        return code
    error = _last_error_line(log_path)
    if error:  # a mistake the suite reported in one line (bad scenario, unreachable server, unknown model, ...)
        raise UserError(error)
    if code == 2 or code < 0:
        raise UserError(f"Locust failed (exit {code}); see {log_path}")
    return code


def _last_error_line(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line.removeprefix("vlab: error: ") for line in lines if line.startswith("vlab: error:")]
    return errors[-1] if errors else ""


class Progress:
    """One status line from the records being written: level, time, live p50 TTFT and output tokens/s."""

    def __init__(self, scenario: Scenario, requests_csv: Path) -> None:
        self.scenario = scenario
        self.path = requests_csv
        self.started = time.time()
        self.offset = 0
        self.rows: list[list[str]] = []
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0

    def _read_new(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in chunk[: end + 1].decode("utf-8", "replace").splitlines():
            if line and not line.startswith("request_id"):
                self.rows.append(line.split(","))

    def show(self, final: bool = False) -> None:
        self._read_new()
        now = time.time()
        if not final and not self.tty and now - self.last_print < 5:
            return
        self.last_print = now
        elapsed = now - self.started
        total = self.scenario.load.duration_s
        ok = [r for r in self.rows if len(r) == len(_COLUMNS) and r[_COL["ok"]] == "1"]
        level = ok[-1][_COL["level"]] if ok else "-"
        target = f"{float(ok[-1][_COL['level_target']]):g}" if ok else "-"
        recent = [r for r in ok if r[_COL["level"]] == level]
        ttft = np.median([float(r[_COL["ttft_ms"]]) for r in recent]) if recent else float("nan")
        window = [r for r in recent if now - float(r[_COL["t_start_s"]]) < 10]
        tokens = sum(max(int(r[_COL["completion_tokens"]]), 0) for r in window)
        unit = "req/s" if self.scenario.load.open_loop else "users"
        line = (
            f"level {level} ({target} {unit}) | {elapsed:5.0f}s / {total:.0f}s | requests {len(self.rows)} | "
            f"p50 TTFT {ttft:7.1f} ms | ~{tokens / 10:6.1f} out tok/s"
        )
        if self.tty and not final:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(("\r" if self.tty else "") + line, file=sys.stderr, flush=True)
