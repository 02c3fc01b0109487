"""Soak: a long run against the local vLLM through the fault proxy, a different fault every few seconds, and a
check that nothing measured was lost: completed requests on disk = streams the proxy relayed to their end.

Faults rotate every `--every` seconds through: none, streams cut mid-token, HTTP 500, HTTP 503, slow events,
stalls past the read timeout (each applied to every other request, so healthy traffic keeps flowing).

    .venv/bin/python bench/soak_faults.py [--minutes 10] [--host URL]   # default: starts cpu-smollm2 itself
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from server.launcher import serving
from vlab.commands.runner import run_locust
from vlab.core.runfolder import REQUESTS_CSV
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=5.0, help="Seconds between fault changes.")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--host", help="A running server (default: start cpu-smollm2 on a free port).")
    args = parser.parse_args()

    with serving(args.host) as host:
        return _soak(args, host)


def _soak(args: argparse.Namespace, host: str) -> int:
    proxy = FaultProxy(host).start()
    stop = threading.Event()
    applied: list[str] = []

    def rotate() -> None:
        for fault in itertools.cycle(FAULTS):
            proxy.fault = fault
            applied.append(fault.kind if fault.kind != "status" else f"status {fault.status}")
            if stop.wait(args.every):
                return

    try:
        with tempfile.TemporaryDirectory() as tmp:
            scenario = Path(tmp) / "soak.yaml"
            scenario.write_text(
                f"name: soak\napi: {{read_timeout_s: 2, metrics_interval_s: 0}}\n"
                f"load: {{users: {args.users}, duration: {args.minutes * 60:.0f}s}}\n"
                "data: {prompt_tokens: 64, output_tokens: 24}\n"
            )
            rotator = threading.Thread(target=rotate, daemon=True)
            rotator.start()
            started = time.time()
            run_locust(load_scenario(scenario), scenario, Path(tmp) / "run", host=proxy.base_url)
            stop.set()
            proxy.fault = Fault()
            requests = pd.read_csv(Path(tmp) / "run" / REQUESTS_CSV, keep_default_na=False, na_values=[""])
            elapsed = time.time() - started
    finally:
        stop.set()
        proxy.stop()
    completed = int((requests.ok == 1).sum())
    kinds = requests[requests.ok == 0].error_kind.value_counts().to_dict()
    print(f"\nsoak: {elapsed / 60:.1f} min, {len(applied)} fault changes, {len(requests)} requests recorded")
    print(f"failed by kind: {kinds}")
    print("| completed on disk | completed streams at the proxy | lost |")
    print("|---|---|---|")
    print(f"| {completed} | {proxy.completed_streams} | {proxy.completed_streams - completed} |")
    return 0 if completed == proxy.completed_streams else 1


if __name__ == "__main__":
    sys.exit(main())
