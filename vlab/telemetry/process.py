"""A sampler child process: started off the load generator's gevent hub, in its own process group, never outliving
its parent, and stopped in order (it takes a last sample and writes its note on SIGTERM).

The samplers (`vlab.telemetry.server_metrics`, `vlab.telemetry.gpu`) run as `python -m <module> sample ...`;
`spawn_sampler` starts one and `SamplerProcess` is the handle the Locust plugin keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from vlab.core.processes import die_with_parent

REPO = Path(__file__).resolve().parents[2]


def write_note(path: Path, data: dict[str, object]) -> None:
    """A sampler's JSON note, replaced atomically."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def sampling_cost(cpu_ms: list[float], wall_ms: list[float], digits: int = 3) -> dict[str, float | None]:
    """A sampler's cost for its note: mean and p95 CPU ms per sample (the sampler process's), mean wall ms per
    sample; None without samples."""
    if not cpu_ms:
        return {"cpu_ms_mean": None, "cpu_ms_p95": None, "wall_ms_mean": None}
    ordered = sorted(cpu_ms)
    return {
        "cpu_ms_mean": round(sum(cpu_ms) / len(cpu_ms), digits),
        "cpu_ms_p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], digits),
        "wall_ms_mean": round(sum(wall_ms) / len(wall_ms), digits),
    }


class SamplerProcess:
    """The sampler child process (its own process group). `stop()` ends it and is safe to call twice."""

    def __init__(self, popen: subprocess.Popen[bytes] | None, run_dir: Path, log_path: Path | None) -> None:
        self.popen = popen
        self.run_dir = run_dir
        self.log_path = log_path

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the group (the sampler takes a last sample and writes its note), SIGKILL after `timeout_s`."""
        if self.popen is None:
            return None
        popen, self.popen = self.popen, None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=5)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                if self.log_path.stat().st_size == 0:
                    self.log_path.unlink()
        return popen.returncode


def spawn_sampler(
    module: str, args: list[str], run_dir: Path, log_path: Path, note_path: Path, env: dict[str, str] | None = None
) -> SamplerProcess:
    """Start `python -m module sample ARGS` for `run_dir`; returns at once and never raises: if the child cannot be
    started, its note says so (`available: false`) and a no-op handle is returned."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(REPO) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, "sample", *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env, cwd=REPO, start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
    except OSError as exc:
        with contextlib.suppress(OSError):
            write_note(note_path, {"available": False, "reason": f"sampler not started: {exc}"})
        return SamplerProcess(None, run_dir, None)
    return SamplerProcess(popen, run_dir, log_path)
