"""Distributed load generation against the real local vLLM: a master with worker processes, records carried to the
master over Locust's messaging, exactly once; a worker that dies loses only what it had not yet sent."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vlab.client.http import find_free_port
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV, read_run_json

pytestmark = pytest.mark.e2e
LOCUSTFILE = str(REPO_ROOT / "locustfiles" / "llm.py")


def start(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def locust_count(run_dir: Path, request_type: str = "POST") -> int:
    with (run_dir / "locust_stats.csv").open() as f:
        return next((int(r["Request Count"]) for r in csv.DictReader(f) if r["Type"] == request_type), 0)


def master_and_workers(tmp_path: Path, scenario: str, host: str, workers: int = 2):
    path = tmp_path / "scenario.yaml"
    path.write_text(scenario)
    run_dir = tmp_path / "run"
    port = find_free_port()
    common = ["--scenario", str(path), "--host", host]
    master = start(
        [*common, "--master", "--headless", "--expect-workers", str(workers), "--master-bind-port", str(port),
         "--run-dir", str(run_dir), "--csv", str(run_dir / "locust"), "--only-summary"],
        tmp_path / "master.log",
    )  # fmt: skip
    procs = [master] + [
        start([*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)], tmp_path / f"w{i}.log")
        for i in range(workers)
    ]
    return master, procs, run_dir


def test_master_and_two_workers_record_every_request_once(vllm_base_url: str, tmp_path: Path) -> None:
    # Open loop: the stage holds exactly rate x duration = 24 arrivals, split 12 + 12 across the two workers.
    scenario = (
        "name: dist\nload: {rate: 4, duration: 6s, arrival: {process: poisson, max_in_flight: 8}}\n"
        "api: {metrics_interval_s: 0}\ndata: {prompt_tokens: 40, output_tokens: 4}\n"
    )
    master, procs, run_dir = master_and_workers(tmp_path, scenario, vllm_base_url)
    try:
        assert master.wait(timeout=90) == 0, (tmp_path / "master.log").read_text()[-3000:]
        for p in procs[1:]:
            p.wait(timeout=30)
    finally:
        stop_all(procs)
    requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    assert len(requests) == 24
    assert requests.request_id.is_unique
    assert requests.node.nunique() == 2 and (requests.groupby("node").size() == 12).all()
    completed = requests[requests.error_kind != "cut_off"]
    assert len(completed) == locust_count(run_dir)  # the totals match Locust's own count
    meta = read_run_json(run_dir)
    assert meta["records"] == 24 and meta["status"] == "completed" and meta["workers"]["lost"] == []


def test_a_worker_killed_mid_run_loses_nothing_it_sent(vllm_base_url: str, tmp_path: Path) -> None:
    scenario = (
        "name: dist-kill\nload: {users: 2, duration: 16s}\napi: {metrics_interval_s: 0}\n"
        "data: {prompt_tokens: 40, output_tokens: 4}\n"
    )
    master, procs, run_dir = master_and_workers(tmp_path, scenario, vllm_base_url)
    try:
        deadline = time.time() + 60
        while not (run_dir / REQUESTS_CSV).exists() or len((run_dir / REQUESTS_CSV).read_text().splitlines()) < 6:
            assert time.time() < deadline, (tmp_path / "master.log").read_text()[-3000:]
            time.sleep(0.2)
        victim = procs[2]
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        assert master.wait(timeout=90) in (0, 1), (tmp_path / "master.log").read_text()[-3000:]
    finally:
        stop_all(procs)
    requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    assert requests.request_id.is_unique
    by_node = requests.groupby("node").t_start_s.max()
    assert len(by_node) == 2
    assert by_node.max() > killed_at + 3  # the surviving worker went on to the end of the run
    meta = read_run_json(run_dir)
    assert meta["status"] == "completed" and len(meta["workers"]["lost"]) == 1
    lost = meta["workers"]["lost"][0]
    assert lost["at"] > killed_at
    assert lost["node"] == f"{socket.gethostname()}-{victim.pid}"  # named by the ids of its records
    assert lost["records_received"] == (requests.node == lost["node"]).sum() > 0
    assert "no heartbeat" in lost["reason"]
    assert meta["records"] == len(requests)
