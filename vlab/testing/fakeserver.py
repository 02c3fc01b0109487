"""Run the fast fake SSE server (`vlab/testing/fake_sse_server.py`) for a block: it measures the client, never vLLM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from vlab.core.processes import die_with_parent

SCRIPT = Path(__file__).with_name("fake_sse_server.py")


@contextlib.contextmanager
def fake_sse_server(folder: Path, *args: str, timeout_s: float = 20.0) -> Iterator[str]:
    """Start the fake server on a free port with `args`, in its own process group; yield its base URL; stop it."""
    ready = folder / f"fake-server-port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--ready-file", str(ready), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=die_with_parent,  # a killed test run leaves no fake server behind
    )  # fmt: skip
    try:
        deadline = time.time() + timeout_s
        while not (ready.exists() and ready.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"fake server died: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
            if time.time() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{int(ready.read_text())}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
