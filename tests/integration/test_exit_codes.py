"""The exit-code table of docs/reliability.md for runs that never start (no server needed): a dead server is 1, a
host without a scheme and a bad scenario are 2; each is one line without a traceback, and a run folder the sweep
created says `not_started` and why. Completed (0) and interrupted (130/143) runs are checked against the real vLLM
in tests/e2e/test_locust_flags.py and tests/e2e/test_interrupted.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import locust_cmd, sweep_cmd
from vlab.client.http import find_free_port
from vlab.core.paths import REPO_ROOT

SCENARIO = "name: codes\nload: {users: 2, duration: 30s}\ndata: {prompt_tokens: 40, output_tokens: 8}\n"


def run(tmp_path: Path, how: str, host: str, scenario: str = SCENARIO) -> tuple[int, str, Path]:
    path = tmp_path / "s.yaml"
    path.write_text(scenario)
    run_dir = tmp_path / "run"
    if how == "sweep":
        cmd = sweep_cmd(path, host, "--run-dir", str(run_dir))
    else:
        cmd = locust_cmd(path, host, "--headless", "--run-dir", str(run_dir))
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr, run_dir


@pytest.mark.parametrize("how", ["sweep", "locust"])
def test_dead_server_is_1_in_one_line(tmp_path: Path, how: str) -> None:
    code, out, run_dir = run(tmp_path, how, f"http://127.0.0.1:{find_free_port()}")
    assert code == 1 and "Traceback" not in out
    assert "cannot reach the server at" in out and "Connection refused" in out
    _not_started_or_absent(run_dir, "cannot reach the server")


@pytest.mark.parametrize("how", ["sweep", "locust"])
def test_host_without_a_scheme_is_2_and_says_what_was_expected(tmp_path: Path, how: str) -> None:
    code, out, run_dir = run(tmp_path, how, "127.0.0.1:8000")
    assert code == 2 and "Traceback" not in out
    assert "expected http://host:port or https://host:port (did you mean http://127.0.0.1:8000?)" in out
    _not_started_or_absent(run_dir, "invalid server URL")


@pytest.mark.parametrize("how", ["sweep", "locust"])
def test_bad_scenario_is_2(tmp_path: Path, how: str) -> None:
    code, out, _ = run(tmp_path, how, "http://127.0.0.1:9", scenario=SCENARIO.replace("users: 2", "users: -2"))
    assert code == 2 and "Traceback" not in out and "load.stages[0].users" in out


def _not_started_or_absent(run_dir: Path, reason: str) -> None:
    """A run that never started leaves no folder, or one whose run.json says `not_started` and why — never records."""
    if not run_dir.exists():
        return
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "not_started" and reason in meta["status_reason"]
    assert not (run_dir / "requests.csv").exists() or len((run_dir / "requests.csv").read_text().splitlines()) <= 1
