"""`vlab serve`: start a server (vLLM, or `transformers serve` for engine transformers) from a profile, wait until
healthy, stop its whole process group on exit."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from types import FrameType

from server.launcher import DEFAULT_HEALTH_TIMEOUT_S, check_startable, log_tail, start_server
from server.profile import PREPARE_HINT, ServerProfile, build_command, list_profiles, load_profile
from vlab.core.errors import UserError


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the `vlab` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="start a vLLM (or Transformers) server from a profile",
        description="Start an OpenAI-compatible server (vLLM or transformers serve) from a profile, wait for /health, "
        "block until Ctrl-C.",
    )
    parser.add_argument(
        "--profile",
        default="cpu-smollm2",
        help=f"profile name or YAML path (default cpu-smollm2; shipped: {', '.join(list_profiles())})",
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: the profile's)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and environment, start nothing")
    parser.add_argument(
        "--health-timeout", type=float, default=DEFAULT_HEALTH_TIMEOUT_S, metavar="S",
        help=f"seconds to wait for /health (default {DEFAULT_HEALTH_TIMEOUT_S:.0f})",
    )  # fmt: skip
    parser.set_defaults(func=run)


def format_dry_run(profile: ServerProfile, port: int | None) -> str:
    """The environment (as `export` lines) and the exact command, shell-quoted for copy-paste."""
    argv, env = build_command(profile, port=port)
    lines = [f"# vlab serve --profile {profile.name} (device {profile.device}): environment set on top of yours"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    lines.append("# command")
    lines.append(shlex.join(argv))
    local = profile.local_model_path()
    if local is not None and not (local / "config.json").is_file():
        lines.append(f"# note: model folder {local} is missing; prepare it with {PREPARE_HINT}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run `vlab serve`; returns the exit code. SIGINT/SIGTERM stop the server's whole process group."""
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 1-65535", exit_code=2)
    profile = load_profile(args.profile)
    if args.dry_run:
        print(format_dry_run(profile, args.port))
        return 0
    check_startable(profile)
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only set a flag: raising from a handler misbehaves when gevent (imported by locust) runs the handlers.
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = None
    try:
        print(f"vlab serve: starting profile {profile.name}, waiting for /health", file=sys.stderr)
        server = start_server(
            profile, port=args.port, health_timeout_s=args.health_timeout, cancel=lambda: bool(stop_requested)
        )
        print(f"vlab serve: healthy after {server.startup_s:.1f} s; log {server.log_path}", file=sys.stderr)
        print(server.base_url, flush=True)
        while not stop_requested:
            code = server.popen.poll()
            if code is not None:
                print(f"vlab serve: server exited with code {code}; last lines of {server.log_path}:", file=sys.stderr)
                print(log_tail(server.log_path), file=sys.stderr)
                return 1
            time.sleep(0.5)
        print("vlab serve: stopping", file=sys.stderr)
        return 0
    finally:
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
