"""Start and stop a vLLM or `transformers serve` server as a subprocess in its own process group (stdlib only).

with start_server(load_profile("cpu-smollm2"), port=find_free_port()) as server:
    ...  # server.base_url is healthy here; on exit the whole process group is stopped
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from server.hub_cache import ensure_hub_view
from server.profile import HUB_CACHE_DIR, PREPARE_HINT, ServerProfile, build_command, check_memory
from vlab.client.http import find_free_port, http_get, port_in_use
from vlab.core.errors import ConfigError, UserError
from vlab.core.group_guard import module_argv
from vlab.core.model_shape import ModelShape
from vlab.core.paths import CACHE_DIR, SERVER_PYTHON
from vlab.core.processes import die_with_parent

LOGS_DIR = CACHE_DIR / "logs"
DEFAULT_HEALTH_TIMEOUT_S = 600.0
"""How long a start may take to answer /health, s. A warm start takes 30–60 s on this 2-core machine; a cold one (no
compile cache yet, as on a fresh clone) on a busy machine took more than 240 s (2026-12-02)."""
POLL_INTERVAL_S = 0.5
DUMMY_HINT = "shared/gpu-offline/make-dummy-model.py (config and tokenizer, no weights; see docs/gpu.md)"
NVIDIA_DEV_ENV = "VLAB_NVIDIA_DEV"
"""Overrides the device node checked for an NVIDIA GPU (default /dev/nvidia0); tests point it elsewhere."""


def _nvidia_smi_gpus(timeout_s: float) -> tuple[list[str] | None, str]:
    """`nvidia-smi -L`'s "GPU ..." lines, or None when it is missing, fails or exits non-zero; and a note on what it
    did (for the reason a machine has no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "nvidia-smi not found"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed ({exc.__class__.__name__})"
    first = (out.stdout or out.stderr).strip().splitlines()
    note = f"nvidia-smi exited {out.returncode}" + (f": {first[0][:120]}" if first else "")
    gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU")]
    return (gpus if out.returncode == 0 else None), note


def detect_nvidia_gpu(timeout_s: float = 10.0) -> tuple[bool, str]:
    """(True, how) if this machine has an NVIDIA GPU, else (False, why not). Never raises.

    A GPU counts as present when `nvidia-smi -L` exits 0 and lists a line starting with "GPU", or when the device
    node /dev/nvidia0 exists (containers without nvidia-smi). The same rule as scripts/select-vllm.sh.
    """
    dev = os.environ.get(NVIDIA_DEV_ENV) or "/dev/nvidia0"
    gpus, smi_note = _nvidia_smi_gpus(timeout_s)
    if gpus:
        return True, f"nvidia-smi lists {len(gpus)} GPU(s)"
    if os.path.exists(dev):
        return True, f"{dev} exists"
    return False, f"no {dev}, {smi_note}"


def visible_gpu_count(timeout_s: float = 10.0) -> int | None:
    """GPUs a server started here would see: `nvidia-smi -L`'s lines, narrowed by CUDA_VISIBLE_DEVICES when set;
    None when nvidia-smi is missing or fails (then vLLM itself decides)."""
    gpus, _ = _nvidia_smi_gpus(timeout_s)
    if gpus is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len(gpus)
    return min(len(gpus), len([d for d in visible.split(",") if d.strip()]))


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


class ServerProcess:
    """A running server started by `start_server`: its own process group, its log file, its URL."""

    def __init__(self, popen: subprocess.Popen[bytes], base_url: str, log_path: Path, profile: ServerProfile) -> None:
        self.popen = popen
        self.base_url = base_url
        self.log_path = log_path
        self.profile = profile
        self.started_at = time.monotonic()
        self.startup_s: float | None = None  # start to healthy /health, seconds; set by start_server

    @property
    def pid(self) -> int:
        """Process id of the server's group guard (`vlab.core.group_guard`), which is also the group id."""
        return self.popen.pid

    def is_running(self) -> bool:
        """True while the server's main process has not exited."""
        return self.popen.poll() is None

    def wait_healthy(self, timeout_s: float, cancel: Callable[[], bool] | None = None) -> float:
        """Block until GET /health answers 200; return seconds since start.

        Raises UserError if the server exits, is not healthy within `timeout_s` seconds, or `cancel()` turns true
        (polled every 0.5 s; lets a signal handler just set a flag, which also works when gevent is patched in).
        """
        deadline = self.started_at + timeout_s
        while True:
            if cancel is not None and cancel():
                self.stop()
                raise UserError("interrupted during start-up; server stopped", exit_code=130)
            code = self.popen.poll()
            if code is not None:
                raise UserError(
                    f"{self.profile.engine} server exited with code {code} during start-up; last lines of "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            if http_get(f"{self.base_url}/health")[0] == 200:
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(
                    f"{self.profile.engine} server not healthy after {timeout_s:.0f} s (stopped it); last lines "
                    f"of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the whole process group, SIGKILL it after `timeout` seconds; return the main process's exit code."""
        if self._group_alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.popen.poll()  # reap the main process so the group can disappear
                if not self._group_alive():
                    break
                time.sleep(0.1)
            else:
                self._signal_group(signal.SIGKILL)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def check_startable(profile: ServerProfile) -> None:
    """Raise UserError (one line) if the profile cannot start here: a cuda profile on a machine without an NVIDIA GPU,
    a missing server venv or model folder, a model folder whose config.json contradicts the profile's `config_json`,
    or a KV budget that cannot hold the weights or one max_model_len request."""
    if profile.device == "cuda":
        present, why = detect_nvidia_gpu()
        if not present:
            raise UserError(
                f"profile {profile.name} is for an NVIDIA GPU (device: cuda) and this machine has none ({why}); "
                "use a cpu profile such as cpu-smollm2 (--dry-run prints the command without a GPU)"
            )
        visible = visible_gpu_count() if profile.tensor_parallel_size > 1 else None
        if visible is not None and visible < profile.tensor_parallel_size:
            raise UserError(
                f"profile {profile.name} splits the model across {profile.tensor_parallel_size} GPUs "
                f"(tensor_parallel_size) and {visible} are visible here (nvidia-smi -L, CUDA_VISIBLE_DEVICES)"
            )
    if not SERVER_PYTHON.exists():
        hint = (
            "set VLAB_SERVER_VENV to a CUDA vLLM venv"
            if profile.device == "cuda"
            else "run scripts/setup-server-env.sh"
        )
        raise UserError(f"server environment {SERVER_PYTHON.parent.parent} missing; {hint}")
    local = profile.local_model_path()
    if local is not None and not (local / "config.json").is_file():
        hint = DUMMY_HINT if profile.dummy_weights else PREPARE_HINT
        raise UserError(f"model folder {local} missing or incomplete; prepare it with {hint}")
    named = profile.config_json_path()
    if local is not None and named is not None:
        try:
            same = ModelShape.from_config_file(local) == ModelShape.from_config_file(named)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        if not same:
            raise UserError(
                f"profile {profile.name}: {local}/config.json and config_json {profile.config_json} differ in shape"
            )
    check_memory(profile)


def launch_server(profile: ServerProfile, port: int | None = None, log_path: Path | None = None) -> ServerProcess:
    """Start `profile` in a new process group and return at once (not yet healthy: `wait_healthy`). Raises UserError
    if the profile cannot start here or the port is taken. Start servers from the main thread: the kernel ties
    `die_with_parent` to the thread that started the child."""
    check_startable(profile)
    port = profile.port if port is None else port
    if port_in_use(profile.host, port):
        raise UserError(f"port {port} on {profile.host} is already in use; pass another port (--port)")
    argv, extra_env = build_command(profile, port=port)
    log_path = log_path or LOGS_DIR / f"server-{profile.name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        if key in extra_env:
            Path(extra_env[key]).mkdir(parents=True, exist_ok=True)
    local = profile.local_model_path()
    if profile.engine == "transformers" and local is not None:
        ensure_hub_view(local, profile.served_model_name, HUB_CACHE_DIR)
    env = {**os.environ, **extra_env}
    host = "127.0.0.1" if profile.host in ("0.0.0.0", "::", "") else profile.host
    with open(log_path, "wb") as log:
        # The guard holds the group: a SIGKILLed parent (closed terminal, OOM) still stops vLLM and its engine.
        popen = subprocess.Popen(
            module_argv(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
    return ServerProcess(popen, f"http://{host}:{port}", log_path, profile)


def start_server(
    profile: ServerProfile,
    port: int | None = None,
    log_path: Path | None = None,
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
    cancel: Callable[[], bool] | None = None,
) -> ServerProcess:
    """Start `profile` in a new process group, wait until GET /health is 200, and return the running server.

    `port` defaults to the profile's port; `log_path` (server stdout+stderr) defaults to
    .cache/logs/server-<profile>-<port>.log. Raises UserError if the port is taken, the model is missing, the server
    exits during start-up or is not healthy within `health_timeout_s` seconds (the log's last lines are included), or
    `cancel()` returns true while waiting.
    """
    server = launch_server(profile, port, log_path)
    try:
        server.startup_s = server.wait_healthy(health_timeout_s, cancel)
    except BaseException:  # also Ctrl-C during start-up: never leave the group behind
        server.stop()
        raise
    return server


@contextlib.contextmanager
def serving(host: str | None, profile: str = "cpu-smollm2", log_path: Path | None = None) -> Iterator[str]:
    """The base URL of `host` if given, else of a local `profile` server started on a free port for the duration
    of the block (and stopped by its process group afterwards)."""
    if host is not None:
        yield host.rstrip("/")
        return
    from server.profile import load_profile

    with start_server(load_profile(profile), port=find_free_port(), log_path=log_path) as server:
        yield server.base_url
