"""The optional openai-SDK user against the real local vLLM: same records as the suite's user, and the run says
everywhere that it is a comparison path (run.json, terminal, report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV, TOKENS_CSV, read_run_json

pytestmark = pytest.mark.e2e


def test_sdk_user_records_like_the_suite_and_is_labelled(vllm_base_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "sdk.yaml"
    scenario.write_text(
        "name: e2e-sdk\napi: {endpoint: chat, metrics_interval_s: 0}\nload: {users: 2, duration: 8s}\n"
        "data: {prompt_tokens: 48, output_tokens: 12}\n"
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfiles" / "openai_sdk.py"), "--scenario",
         str(scenario), "--headless", "--host", vllm_base_url, "--run-dir", str(run_dir), "--only-summary"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "comparison path" in proc.stderr
    assert read_run_json(run_dir)["client"] == "openai-sdk"

    requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    ok = requests[requests.ok == 1]
    assert len(ok) >= 2
    assert (ok.completion_tokens == 12).all() and (ok.n_events == 12).all()  # role chunk excluded, usage read
    assert (ok.prompt_tokens == ok.prompt_tokens_requested).all()
    assert ((ok.ttft_ms > 0) & (ok.ttft_ms <= ok.e2e_ms)).all()
    tokens = pd.read_csv(run_dir / TOKENS_CSV)
    assert tokens[tokens.request_id.isin(ok.request_id)].groupby("request_id").size().eq(12).all()

    report = subprocess.run(
        [sys.executable, "-m", "vlab", "report", str(run_dir)], capture_output=True, text=True, timeout=120,
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "streamed through &#39;openai-sdk&#39;" in (run_dir / "index.html").read_text()
