"""Run one tool once: pinned with taskset, its CPU sampled, its command line, version and output kept.

Everything a run leaves is in its folder: `command.txt` (the exact argv, shell-quoted), `version.txt`, the files
the tool was given (configs), `output.log` (its stdout and stderr) and whatever the tool wrote itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.peers.common import ToolReport, WallToMono, Workload
from bench.peers.install import PeerError, installed_version, load_config, peer_env
from bench.peers.tools import Tool

SAMPLE_S = 0.2


@dataclass
class RunRecord:
    """One tool run. `samples`: (monotonic s, client tree CPU s, server CPU s, busy CPU s of the whole machine);
    CPU is user + system; the machine's busy time is every core's non-idle, non-iowait time."""

    tool: str
    version: str
    argv: list[str]
    out: Path
    returncode: int | None = None
    wall_s: float = 0.0
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)
    error: str = ""
    """Why the run gave no result ('' when it did): a failed start, a non-zero exit, an unreadable output."""
    output_tail: str = ""
    busy_before: float = float("nan")
    """The machine's busy CPU (cores) just before the start, after waiting up to 5 s for a quiet moment."""


def tool_version(name: str) -> str:
    """The tool's installed version; the suite's is its git commit."""
    if name == "suite":
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return f"git {proc.stdout.strip() or '?'}"
    return installed_version(load_config().peers[name])


NICE = int(os.environ.get("PEERS_NICE", "0"))
"""Scheduling priority of the measured processes (tool and fake server), `nice -n NICE`; 0 = as started. A
negative value (root only) keeps other users' work on a shared machine from starving the measurement."""


def priority_prefix() -> list[str]:
    return ["nice", "-n", str(NICE)] if NICE else []


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy since boot (not idle, not iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_for_quiet(limit_cores: float = 0.4, max_wait_s: float = 5.0, probe_s: float = 1.0) -> float:
    """Wait (at most `max_wait_s`) until the machine's busy CPU over one probe falls to `limit_cores`; return the
    last probe's value (cores). On a shared machine this keeps a run from starting in another user's burst."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(probe_s)
        busy = (machine_busy_s() - b0) / (time.monotonic() - t0)
        if busy <= limit_cores or time.monotonic() >= deadline:
            return busy


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and all its descendants, including reaped children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def run_tool(
    tool: Tool,
    w: Workload,
    url: str,
    out: Path,
    client_cpus: str,
    timeout_s: float,
    server_pid: int | None = None,
) -> tuple[RunRecord, ToolReport | None]:
    """Run `tool` on workload `w` against `url`; return the run and the tool's parsed report (None on failure)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        version = tool_version(tool.name)
    except PeerError as exc:
        return RunRecord(tool.name, "?", [], out, error=f"could not run: {exc}"), None
    cmd = tool.command(w, url, out)
    for rel, text in cmd.files.items():
        (out / rel).write_text(text)
    argv = [*priority_prefix(), "taskset", "-c", client_cpus, *cmd.argv]
    (out / "command.txt").write_text(" ".join(shlex.quote(a) for a in argv) + "\n")
    (out / "version.txt").write_text(f"{tool.name} {version}\n")
    rec = RunRecord(tool.name, version, argv, out)
    rec.busy_before = wait_for_quiet()
    clock = WallToMono()
    server = psutil.Process(server_pid) if server_pid else None
    t0 = time.monotonic()
    with open(out / "output.log", "w") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=out,
            env=peer_env(**cmd.env), start_new_session=True,
        )  # fmt: skip
    root = psutil.Process(proc.pid)
    last_client = 0.0
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout_s:
                rec.error = f"timed out after {timeout_s:.0f} s"
                break
            try:
                last_client = max(last_client, _tree_cpu(root))
                srv = server.cpu_times() if server else None
                srv_s = (srv.user + srv.system) if srv else 0.0
                rec.samples.append((time.monotonic(), last_client, srv_s, machine_busy_s()))
            except psutil.Error:
                pass
            time.sleep(SAMPLE_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:  # leftovers of a multi-process tool that exited (e.g. its service processes)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    rec.wall_s = time.monotonic() - t0
    rec.returncode = proc.returncode
    (out / "cpu-samples.json").write_text(
        json.dumps({"columns": ["mono_s", "client_cpu_s", "server_cpu_s", "machine_busy_s"], "samples": rec.samples})
    )
    text = (out / "output.log").read_text(errors="replace")
    rec.output_tail = "\n".join(text.strip().splitlines()[-15:])
    if not rec.error and proc.returncode not in (0,):
        last = next((ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip()), "(no output)")
        rec.error = f"exit {proc.returncode}: {last[:200]}"
    try:
        report = tool.parse(out, clock)
    except Exception as exc:  # any unreadable output is one line in the table, not a crash
        if not rec.error:
            rec.error = f"output unreadable: {type(exc).__name__}: {str(exc)[:160]}"
        return rec, None
    return rec, report
