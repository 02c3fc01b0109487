"""Locust with its web UI in a child process, for the web UI's browser and integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlab.core.paths import REPO_ROOT

LOCUSTFILE = str(REPO_ROOT / "locustfiles" / "llm.py")
SCENARIO = str(REPO_ROOT / "scenarios" / "webui-smoke.yaml")


def free_port() -> int:
    from vlab.client.http import find_free_port

    return find_free_port()


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@contextmanager
def locust_ui(tmp_path: Path, host: str, *extra: str, scenario: str = SCENARIO) -> Iterator[tuple[str, Path, Path]]:
    """Locust with the web UI in its own session; yields (UI base URL, run folder, log); kills the group at the end."""
    port = free_port()
    run_dir = tmp_path / "run"
    log = tmp_path / "locust.log"
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--scenario", scenario, "--host", host,
           "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir", str(run_dir), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                get_json(f"{base}/llm/data")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        yield base, run_dir, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_ramp_through_form(page: Any, base: str, users: int, spawn_rate: float) -> None:
    """Locust's own start form: user count, spawn rate, Start."""
    page.goto(f"{base}/")
    page.fill('input[name="userCount"]', str(users))
    page.fill('input[name="spawnRate"]', str(spawn_rate))
    page.click('button[type="submit"]:has-text("Start")')
    page.get_by_role("tab", name="LLM").wait_for(timeout=15_000)
