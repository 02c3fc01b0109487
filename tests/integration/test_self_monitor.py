"""The load generator watches itself: overloaded on purpose against the fast fake SSE server (a fake is right here:
this measures the client, and no real server can feed it this fast), it says so on the terminal and on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from vlab.core.client_health import classify
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import MONITOR_CSV, REQUESTS_CSV
from vlab.testing.fakeserver import fake_sse_server


def test_overloaded_client_is_flagged(tmp_path: Path) -> None:
    with fake_sse_server(tmp_path, "--mode", "bulk", "--tokens", "256", "--no-events") as url:
        scenario = tmp_path / "flood.yaml"
        scenario.write_text(
            "name: flood\napi: {model: fake, metrics_interval_s: 0}\nload: {users: 64, duration: 6s}\n"
            "data: {prompt_tokens: 16, output_tokens: 256}\n"
        )
        run_dir = tmp_path / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfiles" / "llm.py"), "--scenario",
             str(scenario), "--headless", "--host", url, "--run-dir", str(run_dir),
             "--only-summary", "--no-report"],
            capture_output=True, text=True, timeout=90, cwd=REPO_ROOT,
        )  # fmt: skip
    # On a quiet machine the flood takes the client's whole core ("saturated"); on a contended one the client may
    # not even get the core ("starved"), or its hub stalls while other processes hold the cores ("blocked"): whichever,
    # the level is flagged, on the terminal and on disk.
    flags = [f"{flag} at level 0" for flag in ("saturated", "starved", "blocked")]
    assert any(flag in proc.stderr for flag in flags), proc.stderr[-2000:]
    samples = pd.read_csv(run_dir / MONITOR_CSV)
    assert len(samples) >= 3
    assert any(classify(c, lag) for c, lag in zip(samples.cpu, samples.hub_lag_ms, strict=True))
    assert len(pd.read_csv(run_dir / REQUESTS_CSV)) > 64  # it did stream all along
    assert samples["events_rx"].sum() > 64 * 256  # the live view saw the events while they streamed
