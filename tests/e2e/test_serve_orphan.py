"""Nothing outlives its parent: `vlab serve` killed with SIGKILL (a closed terminal, an OOM kill) while its vLLM is
starting takes that vLLM — the API server and its engine process, in their own session — with it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from vlab.client.http import find_free_port
from vlab.core.paths import REPO_ROOT

pytestmark = pytest.mark.e2e
VLAB = REPO_ROOT / ".venv" / "bin" / "vlab"


def in_session(sid: int) -> list[int]:
    """Every live process of session `sid` (vlab serve starts vLLM in a session of its own)."""
    pids = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return pids


def test_sigkill_of_vlab_serve_leaves_no_vllm(tmp_path: Path) -> None:
    log = (tmp_path / "serve.log").open("wb")
    cmd = [str(VLAB), "serve", "--profile", "cpu-smollm2", "--port", str(find_free_port())]
    parent = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the guard, vLLM's API server and its engine process all run
            children = psutil.Process(parent.pid).children()
            if children:
                server = children[0].pid  # the group guard: its pid is the session id
                if len(in_session(server)) >= 3:
                    break
            assert parent.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.2)
        assert server is not None and len(in_session(server)) >= 3, "vLLM did not start its engine process"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 90
        while in_session(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert in_session(server) == [], "vLLM outlived the vlab serve that started it"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        if server is not None:
            for pid in in_session(server):
                os.kill(pid, signal.SIGKILL)
