"""`vlab gateway`: start the gateway (gateway/) in front of vLLM, optionally starting vLLM from a profile first.

    vlab gateway --config gateway/example.yaml --profile cpu-smollm2     # vLLM on a free port, then the gateway
    vlab gateway --config gateway/example.yaml --upstream http://127.0.0.1:8100
    vlab gateway --experiment [--upstream URL]                            # the overhead and fairness experiment

The gateway runs as `python -m gateway` in its own process group; with `--profile` vLLM is started first through
`server.launcher` (its own process group too) and the gateway's upstream is that server. Ctrl-C or SIGTERM stops
the gateway, then vLLM; so does either of them exiting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from vlab.commands.helptext import plain
from vlab.core.errors import UserError
from vlab.core.paths import REPO_ROOT

GATEWAY_HEALTH_TIMEOUT_S = 20.0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="Start the API gateway (keys, limits, validation) in front of vLLM.",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="Gateway config YAML (gateway/example.yaml is a start).")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--profile", help="Start vLLM from this server profile first; the gateway fronts it.")
    where.add_argument("--upstream", help="Front an already running server at this base URL.")
    parser.add_argument("--port", type=int, help="Gateway listen port (default: the config's listen.port).")
    parser.add_argument(
        "--experiment", action="store_true",
        help="Run the gateway experiment instead (same as python -m vlab.commands.gateway_experiment).",
    )  # fmt: skip
    parser.set_defaults(func=_cmd_gateway)


def _cmd_gateway(args: argparse.Namespace) -> int:
    if args.experiment:
        from vlab.commands.gateway_experiment import main as experiment_main

        argv = ["--upstream", args.upstream] if args.upstream else []
        argv += ["--profile", args.profile] if args.profile else []
        return experiment_main(argv)
    if args.config is None:
        raise UserError("--config FILE is required (see gateway/example.yaml)", exit_code=2)
    from gateway.config import check_upstream_url, load_config

    if args.upstream:
        try:
            check_upstream_url(args.upstream)
        except ValueError as exc:
            raise UserError(f"--upstream: {exc}", exit_code=2) from None
    config = load_config(args.config, upstream=args.upstream)  # fail on a bad config before starting vLLM
    port = args.port if args.port is not None else config.listen.port
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = None
    gateway: subprocess.Popen[bytes] | None = None
    try:
        upstream = config.upstream
        if args.profile:
            from server.launcher import start_server
            from server.profile import load_profile
            from vlab.client.http import find_free_port

            profile = load_profile(args.profile)
            print(f"vlab gateway: starting vLLM ({profile.name}), waiting for /health", file=sys.stderr)
            server = start_server(profile, port=find_free_port(), cancel=lambda: bool(stop_requested))
            upstream = server.base_url
            print(f"vlab gateway: vLLM healthy at {upstream} after {server.startup_s:.1f} s", file=sys.stderr)
        else:
            from gateway.cli import upstream_problem

            problem = upstream_problem(upstream)
            if problem is not None:
                raise UserError(f"upstream {upstream} is not usable: {problem}")
        gateway = start_gateway(args.config, upstream, port)
        base = f"http://{_connect_host(config.listen.host)}:{port}"
        wait_gateway_healthy(gateway, base, cancel=lambda: bool(stop_requested))
        print(f"vlab gateway: gateway at {base} -> {upstream} (Ctrl-C stops both)", file=sys.stderr)
        print(base, flush=True)
        while not stop_requested:
            if gateway.poll() is not None:
                raise UserError(f"the gateway exited with code {gateway.returncode}")
            if server is not None and not server.is_running():
                raise UserError(f"vLLM exited with code {server.popen.returncode}; see {server.log_path}")
            time.sleep(0.5)
        print("vlab gateway: stopping", file=sys.stderr)
        return 0
    finally:
        if gateway is not None:
            stop_process_group(gateway)
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def start_gateway(
    config: Path, upstream: str, port: int, *, log_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m gateway --config CONFIG --upstream URL --port PORT` in its own process group. Its JSON log goes to
    the config's log.path (else to stderr, here `log_path` when given)."""
    cmd = [sys.executable, "-m", "gateway", "--config", str(config), "--upstream", upstream, "--port", str(port)]
    stderr = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    finally:
        if stderr is not None:
            stderr.close()


def wait_gateway_healthy(
    proc: subprocess.Popen[bytes], base_url: str, *, timeout_s: float = GATEWAY_HEALTH_TIMEOUT_S, cancel=None
) -> None:
    """Block until the gateway's /health is 200; UserError if it exits first or takes longer than `timeout_s`."""
    from vlab.client.http import http_get

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise UserError(f"the gateway exited with code {proc.returncode} during start-up (its error is above)")
        if cancel is not None and cancel():
            raise UserError("interrupted during start-up", exit_code=130)
        if http_get(f"{base_url}/health", timeout_s=2.0)[0] == 200:
            return
        if time.monotonic() > deadline:
            raise UserError(f"the gateway at {base_url} was not healthy after {timeout_s:.0f} s")
        time.sleep(0.1)


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after `timeout_s`; the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
