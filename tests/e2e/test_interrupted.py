"""An interrupted sweep keeps everything it measured: SIGTERM (as Ctrl-C would) mid-run against the real vLLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vlab.core.paths import REPO_ROOT
from vlab.core.records import RequestRecord
from vlab.core.runfolder import REQUESTS_CSV

pytestmark = pytest.mark.e2e


def test_sigterm_mid_sweep_keeps_whole_records_and_a_report(vllm_base_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        "name: interrupted\napi: {metrics_interval_s: 0}\n"
        "load: {stages: [{users: 2, duration: 60s}, {users: 4, duration: 60s}]}\n"
        "data: {prompt_tokens: 40, output_tokens: 8}\n"
    )
    run_dir = tmp_path / "run"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "vlab", "sweep", str(scenario), "--host", vllm_base_url, "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not (run_dir / REQUESTS_CSV).exists() or len((run_dir / REQUESTS_CSV).read_text().splitlines()) < 5:
            assert time.time() < deadline and sweep.poll() is None, "no records came"
            time.sleep(0.2)
        interrupted_at = time.time()
        os.kill(sweep.pid, signal.SIGTERM)
        _, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert time.time() - interrupted_at < 30 and "interrupted" in err
    lines = (run_dir / REQUESTS_CSV).read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)  # no half-written line
    requests = pd.read_csv(run_dir / REQUESTS_CSV)
    assert list(requests.columns) == RequestRecord.columns() and len(requests) >= 4
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["interrupted_at"] >= interrupted_at - 1
    assert meta["records"] == len(requests)
    html = (run_dir / "index.html").read_text()  # the sweep built the report from the partial run
    assert "interrupted" in html
    leftover = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert leftover.stdout == ""  # and no Locust process was left behind
