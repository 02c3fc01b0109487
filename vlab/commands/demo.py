"""`vlab demo`: the main job. Start the local vLLM, sweep the demo scenario against it, build the report, stop.

The server runs in its own process group and is stopped whatever happens (Ctrl-C included); the report's path is
the last line printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlab.core.paths import SCENARIOS_DIR
from vlab.core.runfolder import SERVER_LOG, new_run_dir
from vlab.core.scenario import load_scenario


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="Start the local vLLM, run the demo sweep, write the report.")
    parser.add_argument("--profile", default="cpu-smollm2", help="Server profile (server/profiles/).")
    parser.add_argument("--scenario", type=Path, default=SCENARIOS_DIR / "demo.yaml")
    parser.add_argument("--port", type=int, help="Server port (default: a free one).")
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from server.launcher import start_server
    from server.profile import load_profile
    from vlab.client.http import find_free_port
    from vlab.commands.runner import run_locust
    from vlab.commands.sweep import report_and_table

    scenario = load_scenario(args.scenario)
    profile = load_profile(args.profile)
    port = args.port or find_free_port()
    run_dir = new_run_dir(scenario.name)
    print(f"starting vLLM ({profile.name}) on 127.0.0.1:{port} ...", flush=True)
    with start_server(profile, port=port, log_path=run_dir / SERVER_LOG) as server:
        print(f"server healthy after {server.startup_s:.1f} s at {server.base_url}", flush=True)
        code = run_locust(scenario, args.scenario, run_dir, host=server.base_url, server_profile=profile.name)
    report_and_table(run_dir)
    return code
