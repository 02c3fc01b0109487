"""Soak: a long run against the local vLLM through the fault proxy, a different fault every few seconds, optionally
over worker processes with one killed mid-run, and a check that nothing measured was lost or counted twice.

Faults rotate every `--every` seconds through: none, streams cut mid-token, HTTP 500, HTTP 503, slow events,
stalls past the read timeout (each applied to every other request, so healthy traffic keeps flowing).

Every request carries its record's id as `X-Request-Id`; the proxy keeps the ids it received and the ids whose
stream it relayed through `data: [DONE]` (= the server completed it and the client got all of it). The invariant:

- every id on disk is there once, and was received by the proxy;
- every id the proxy relayed to its end is on disk as a completed request (ok = 1), or belongs to the worker that
  was killed and is counted as lost, with run.json's reason for it (`workers.lost`);
- every id the proxy received is on disk (completed or failed), or belongs to the killed worker.

    .venv/bin/python bench/soak_faults.py [--minutes 10] [--host URL]        # default: starts cpu-smollm2 itself
    .venv/bin/python bench/soak_faults.py --minutes 30 --processes 2 --kill-worker-at 600
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from server.launcher import serving
from vlab.commands.runner import run_locust
from vlab.core.runfolder import REQUESTS_CSV, RUN_JSON
from vlab.core.scenario import load_scenario
from vlab.testing.faultproxy import Fault, FaultProxy

FAULTS = [
    Fault(),
    Fault("cut", after_events=5, every=2),
    Fault("status", status=500, every=2),
    Fault("status", status=503, every=2),
    Fault("delay", delay_s=0.05, every=2),
    Fault("stall", after_events=3, delay_s=4.0, every=2),
]


@dataclass
class Killed:
    """The worker process the soak killed: its node (`host-pid`, the prefix of its request ids)."""

    node: str = ""


@dataclass
class Verdict:
    """The invariant, counted. `lost_*` are the killed worker's; `unexplained_*` must be 0."""

    on_disk: int
    duplicates: int
    received: int
    completed_at_proxy: int
    completed_on_disk: int
    lost_completed: int
    lost_in_flight: int
    unexplained_completed: list[str] = field(default_factory=list)
    unexplained_received: list[str] = field(default_factory=list)
    not_seen_by_proxy: list[str] = field(default_factory=list)
    lost_workers: list[dict] = field(default_factory=list)
    killed: str = ""

    @property
    def killed_is_named(self) -> bool:
        """run.json lists the killed worker (by node) among the lost, with the master's count of its records."""
        return not self.killed or any(lost.get("node") == self.killed for lost in self.lost_workers)

    @property
    def holds(self) -> bool:
        unexplained = self.unexplained_completed or self.unexplained_received or self.not_seen_by_proxy
        return not (self.duplicates or unexplained) and self.killed_is_named


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=5.0, help="Seconds between fault changes.")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--processes", type=int, default=0, help="Locust worker processes (0: one process).")
    parser.add_argument("--kill-worker-at", type=float, help="SIGKILL one worker process this many seconds in.")
    parser.add_argument("--host", help="A running server (default: start cpu-smollm2 on a free port).")
    parser.add_argument("--keep", type=Path, help="Copy the run folder here afterwards.")
    args = parser.parse_args()
    if args.kill_worker_at is not None and args.processes < 2:
        parser.error("--kill-worker-at needs --processes 2 or more (a killed single process ends the run)")

    with serving(args.host) as host:
        return _soak(args, host)


def _soak(args: argparse.Namespace, host: str) -> int:
    proxy = FaultProxy(host).start()
    stop = threading.Event()
    applied: list[str] = []
    killed = Killed()

    def rotate() -> None:
        for fault in itertools.cycle(FAULTS):
            proxy.fault = fault
            applied.append(fault.kind if fault.kind != "status" else f"status {fault.status}")
            if stop.wait(args.every):
                return

    def kill_a_worker() -> None:
        if stop.wait(args.kill_worker_at):
            return
        victim = _a_worker_process()
        if victim is None:
            print("soak: no worker process found to kill", file=sys.stderr)
            return
        killed.node = f"{socket.gethostname()}-{victim.pid}"
        victim.send_signal(signal.SIGKILL)
        print(f"soak: killed worker {killed.node} at {args.kill_worker_at:g} s", file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            scenario = Path(tmp) / "soak.yaml"
            scenario.write_text(
                f"name: soak\napi: {{read_timeout_s: 2, metrics_interval_s: 0}}\n"
                f"load: {{users: {args.users}, duration: {args.minutes * 60:.0f}s}}\n"
                "data: {prompt_tokens: 64, output_tokens: 24}\n"
            )
            threads = [threading.Thread(target=rotate, daemon=True)]
            if args.kill_worker_at is not None:
                threads.append(threading.Thread(target=kill_a_worker, daemon=True))
            for thread in threads:
                thread.start()
            started = time.time()
            run_dir = Path(tmp) / "run"
            code = run_locust(load_scenario(scenario), scenario, run_dir, host=proxy.base_url, processes=args.processes)
            stop.set()
            proxy.fault = Fault()
            elapsed = time.time() - started
            requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
            meta = json.loads((run_dir / RUN_JSON).read_text())
            if args.keep:
                shutil.copytree(run_dir, args.keep, dirs_exist_ok=True)
    finally:
        stop.set()
        proxy.stop()
    verdict = judge(requests, proxy.received_ids, proxy.completed_ids, killed.node, meta)
    _print(args, elapsed, applied, requests, verdict, killed, meta, code)
    return 0 if verdict.holds else 1


def _a_worker_process() -> psutil.Process | None:
    """A Locust worker forked by the run's master (`--processes`). The master is the child whose command line runs
    Locust: the server this soak started is a child too, and killing one of its processes is another soak."""
    for child in psutil.Process(os.getpid()).children():
        if "locust" in " ".join(child.cmdline()):
            workers = sorted(child.children(), key=lambda p: p.pid)
            return workers[0] if workers else None
    return None


def judge(requests: pd.DataFrame, received: list[str], completed: list[str], killed: str, meta: dict) -> Verdict:
    """Count the invariant (see the module docstring) from the records on disk and the proxy's two id lists."""
    ids = requests.request_id.astype(str)
    on_disk = set(ids)
    ok_on_disk = set(ids[requests.ok == 1])

    def of_killed(request_id: str) -> bool:
        return bool(killed) and request_id.startswith(killed + "-")

    missing_completed = [i for i in completed if i not in ok_on_disk]
    counted = set(missing_completed)
    missing_received = [i for i in received if i not in on_disk and i not in counted]
    return Verdict(
        on_disk=len(ids),
        duplicates=int(ids.duplicated().sum()),
        received=len(received),
        completed_at_proxy=len(completed),
        completed_on_disk=len(ok_on_disk),
        lost_completed=sum(map(of_killed, missing_completed)),
        lost_in_flight=sum(map(of_killed, missing_received)),
        unexplained_completed=[i for i in missing_completed if not of_killed(i)],
        unexplained_received=[i for i in missing_received if not of_killed(i)],
        not_seen_by_proxy=sorted(on_disk - set(received)),
        lost_workers=(meta.get("workers") or {}).get("lost", []),
        killed=killed,
    )


def _print(args, elapsed, applied, requests, v: Verdict, killed: Killed, meta: dict, code: int) -> None:
    kinds = requests[requests.ok == 0].error_kind.value_counts().to_dict()
    by_node = requests.groupby("node").size().to_dict()
    print(f"\nsoak: {elapsed / 60:.1f} min, {args.processes or 1} process(es), {len(applied)} fault changes, "
          f"run {meta.get('status')} (exit {code}), {v.on_disk} requests on disk {by_node}")  # fmt: skip
    print(f"failed by kind: {kinds}")
    print("| received at proxy | on disk | duplicates | completed at proxy | completed on disk | lost (killed worker):"
          " completed / in flight | unexplained |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    unexplained = len(v.unexplained_completed) + len(v.unexplained_received) + len(v.not_seen_by_proxy)
    print(f"| {v.received} | {v.on_disk} | {v.duplicates} | {v.completed_at_proxy} | {v.completed_on_disk} | "
          f"{v.lost_completed} / {v.lost_in_flight} | {unexplained} |")  # fmt: skip
    if killed.node:
        print(f"killed {killed.node}: {by_node.get(killed.node, 0)} of its requests on disk; named in run.json: "
              f"{v.killed_is_named}")  # fmt: skip
    for lost in v.lost_workers:
        print(f"run.json workers.lost: {lost.get('node')} at +{lost['at'] - meta['started_at']:.1f} s, "
              f"{lost.get('records_received')} records received; reason: {lost.get('reason')}")  # fmt: skip
    for label, sample in (("completed, not on disk", v.unexplained_completed),
                          ("received, not on disk", v.unexplained_received),
                          ("on disk, never received", v.not_seen_by_proxy)):  # fmt: skip
        if sample:
            print(f"UNEXPLAINED {label}: {len(sample)}, e.g. {sample[:5]}")
    print("invariant " + ("holds" if v.holds else "BROKEN"))


if __name__ == "__main__":
    sys.exit(main())
