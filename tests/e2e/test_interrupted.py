"""An interrupted run keeps everything it measured and says so in its exit code: SIGINT (Ctrl-C) → 130 and SIGTERM →
143, for `vlab sweep` and for a plain headless `locust -f` run, mid-run against the real vLLM (docs/reliability.md has
the whole exit-code table)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.support.cli import locust_cmd, sweep_cmd
from vlab.core.paths import REPO_ROOT
from vlab.core.records import RequestRecord
from vlab.core.runfolder import REQUESTS_CSV

pytestmark = pytest.mark.e2e


def _as_in_a_terminal() -> None:
    """SIGINT as a terminal's Ctrl-C finds it: a shell that runs `make test` in the background (CI runners, `cmd &`)
    starts it with SIGINT ignored, which Python and every child then inherit — Locust would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("how", "sig", "code"),
    [("sweep", signal.SIGTERM, 143), ("sweep", signal.SIGINT, 130), ("locust", signal.SIGINT, 130),
     ("locust", signal.SIGTERM, 143)],
    ids=["sweep-SIGTERM", "sweep-SIGINT", "locust-SIGINT", "locust-SIGTERM"],
)  # fmt: skip
def test_interrupt_mid_run_keeps_whole_records_a_report_and_its_exit_code(
    vllm_base_url: str, tmp_path: Path, how: str, sig: signal.Signals, code: int
) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        "name: interrupted\napi: {metrics_interval_s: 0}\n"
        "load: {stages: [{users: 2, duration: 60s}, {users: 4, duration: 60s}]}\n"
        "data: {prompt_tokens: 40, output_tokens: 8}\n"
    )
    run_dir = tmp_path / "run"
    if how == "sweep":
        cmd = sweep_cmd(scenario, vllm_base_url, "--run-dir", str(run_dir))
    else:
        cmd = locust_cmd(scenario, vllm_base_url, "--headless", "--run-dir", str(run_dir))
    sweep = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO_ROOT,
        preexec_fn=_as_in_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not (run_dir / REQUESTS_CSV).exists() or len((run_dir / REQUESTS_CSV).read_text().splitlines()) < 5:
            assert time.time() < deadline and sweep.poll() is None, "no records came"
            time.sleep(0.2)
        interrupted_at = time.time()
        os.kill(sweep.pid, sig)
        _, err = sweep.communicate(timeout=90)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == code, err[-2000:]
    assert time.time() - interrupted_at < 60 and "interrupted" in err.lower()
    lines = (run_dir / REQUESTS_CSV).read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)  # no half-written line
    requests = pd.read_csv(run_dir / REQUESTS_CSV)
    assert list(requests.columns) == RequestRecord.columns() and len(requests) >= 4
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["interrupted_at"] >= interrupted_at - 1
    assert meta["records"] == len(requests)
    html = (run_dir / "index.html").read_text()  # the report was built from the partial run
    assert "interrupted" in html
    leftover = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert leftover.stdout == ""  # and no Locust process was left behind
