"""`vlab sweep`: run a scenario's load levels in one headless Locust run, show progress, then the report and a
per-level results table.

One-off changes need no new YAML: `vllm bench serve`'s words where they fit, and `--set KEY=VALUE` for anything
else, all checked by the same strict model as the file; the effective scenario is what run.json records.

| option | means |
|---|---|
| `--max-concurrency N` | one closed-loop level of N users (open loop: at most N requests in flight) |
| `--request-rate R` | one open-loop level of R arrivals/s |
| `--num-prompts N` | that level ends after N requests (closed loop: N completed; open loop: N arrivals) |
| `--random-input-len L`, `--random-output-len L` | `data.prompt_tokens`, `data.output_tokens` |
| `--model M`, `--endpoint chat\\|completions` | `api.model`, `api.endpoint` |
| `--tokenizer PATH` | `api.tokenizer`: a tokenizer.json or model folder (exact lengths without `/tokenize`) |
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vlab.client.api import credentials_for, http_json, probe_server
from vlab.commands.helptext import plain
from vlab.commands.runner import locust_command, run_locust
from vlab.core.datasets import load_scenario_data
from vlab.core.errors import ConfigError, UserError
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, clear_run, holds_run, new_run_dir
from vlab.core.scenario import Scenario, load_scenario, read_scenario_file

ENDPOINTS = {
    "chat": "chat",
    "completions": "completions",
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
}


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a scenario's load levels headless, then the report",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML file")
    parser.add_argument("-H", "--host", help="server base URL (default: the scenario's api.host, else 127.0.0.1:8000)")
    parser.add_argument(
        "-o", "--run-dir", "--output", dest="run_dir", type=Path,
        help="run folder (default: reports/<time>-<scenario name>); one that already holds a run is refused",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir, whole")
    parser.add_argument("--processes", type=int, default=0, help="Locust worker processes on this machine (default 0)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report and the results table")
    parser.add_argument("--dry-run", action="store_true", help="print the effective levels and command; run nothing")
    bench = parser.add_argument_group("overrides (vllm bench serve's words; see above)")
    bench.add_argument("--max-concurrency", type=int, metavar="N")
    bench.add_argument("--request-rate", type=float, metavar="R")
    bench.add_argument("--num-prompts", type=int, metavar="N")
    bench.add_argument("--random-input-len", type=int, metavar="L")
    bench.add_argument("--random-output-len", type=int, metavar="L")
    bench.add_argument("--model", metavar="M")
    bench.add_argument("--endpoint", choices=sorted(ENDPOINTS), metavar="E", help="chat or completions")
    bench.add_argument("--tokenizer", metavar="PATH", help="local tokenizer.json or model folder (api.tokenizer)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any scenario key, e.g. --set data.output_tokens=256 (repeatable)")  # fmt: skip
    adaptive = parser.add_argument_group("adaptive search")
    adaptive.add_argument(
        "--adaptive",
        action="store_true",
        help="find the highest load meeting the scenario's SLOs: double from the first stage, then bisect",
    )
    adaptive.add_argument("--max-probes", type=int, default=10, help="at most this many probe runs (default 10)")
    parser.set_defaults(func=_cmd_sweep)


def bench_overrides(args: argparse.Namespace, raw: dict[str, Any]) -> list[str]:
    """`--set` items for the vllm-bench words given on the command line, then the explicit `--set` items."""
    out: list[str] = []
    positive = {
        "--max-concurrency": args.max_concurrency, "--request-rate": args.request_rate,
        "--num-prompts": args.num_prompts, "--random-input-len": args.random_input_len,
        "--random-output-len": args.random_output_len,
    }  # fmt: skip
    for flag, value in positive.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} {value:g}: expected a positive number")
    if args.request_rate is not None or args.max_concurrency is not None or args.num_prompts is not None:
        load = raw.get("load") or {}
        first = (load.get("stages") or [load])[0] if isinstance(load, dict) else {}
        stage: dict[str, Any] = {}
        if args.request_rate is not None:
            stage["rate"] = args.request_rate
            if args.max_concurrency is not None:
                out.append(f"load.arrival.max_in_flight={args.max_concurrency}")
        elif args.max_concurrency is not None:
            stage["users"] = args.max_concurrency
        else:
            stage.update({k: first[k] for k in ("users", "rate") if k in first})
        if args.num_prompts is not None:
            stage["requests"] = args.num_prompts
        elif "duration" in first:
            stage["duration"] = first["duration"]
        out.append(f"load.stages={json.dumps([stage])}")
    if args.random_input_len is not None:
        out.append(f"data.prompt_tokens={args.random_input_len}")
    if args.random_output_len is not None:
        out.append(f"data.output_tokens={args.random_output_len}")
    if args.model:
        out.append(f"api.model={json.dumps(args.model)}")
    if args.endpoint:
        out.append(f"api.endpoint={ENDPOINTS[args.endpoint]}")
    if args.tokenizer:
        out.append(f"api.tokenizer={json.dumps(args.tokenizer)}")
    return out + list(args.overrides)


def describe_levels(scenario: Scenario) -> list[str]:
    """One line per level of the plan, with how it ends, and the least and most total time."""
    load = scenario.load
    unit = "req/s" if load.open_loop else "users"
    lines = []
    for i, st in enumerate(load.stages):
        ends = []
        if st.duration is not None:
            ends.append(f"≥ {st.duration:g} s")
        if st.requests is not None:
            ends.append(f"{st.requests} {'arrivals' if load.open_loop else 'requests ended'}")
        cap = f", cap {st.cap_s:g} s" if st.requests is not None else ""
        lines.append(f"  level {i}: {st.target:g} {unit}: {' and '.join(ends)}{cap}")
    drain = f"; each level drains (≤ {load.drain_timeout_s:g} s)" if load.drain else ""
    lines.append(f"  total: at least {load.duration_s:g} s, at most {load.cap_s:g} s{drain}")
    return lines


def probe_request_s(host: str, scenario: Scenario) -> float:
    """Seconds one request of the scenario's mean shape takes at 1 user (a non-streamed completion of
    ~prompt-tokens words and the mean output length, ignore_eos): the dry run's yardstick. Raises `UserError` when
    the server cannot be asked."""
    creds = credentials_for(scenario.api)
    info = probe_server(host, scenario.api.model, creds=creds)
    lo, hi = scenario.data.prompt_tokens.bounds()
    out_lo, out_hi = scenario.data.output_tokens.bounds()
    words = " ".join(["hello"] * max(1, (lo + hi) // 2))
    payload = {"model": info.model, "prompt": words, "max_tokens": max(1, (out_lo + out_hi) // 2),
               "ignore_eos": True, "temperature": 0}  # fmt: skip
    t0 = time.perf_counter()
    http_json(host, "/v1/completions", payload, creds=creds, timeout_s=120.0)
    return time.perf_counter() - t0


def estimate_levels(scenario: Scenario, request_s: float) -> list[str]:
    """Per level, the time it should take given one request takes `request_s` at 1 user: closed loop, the longer of
    its `duration` and requests / users × request_s; open loop, the longer of its `duration` and requests / rate.
    Closed-loop figures assume perfect scaling with users, so they are lower bounds where the server slows down."""
    load, total, lines = scenario.load, 0.0, []
    for i, st in enumerate(load.stages):
        need = 0.0
        if st.requests is not None:
            need = st.requests / st.target * (1.0 if load.open_loop else request_s)
        est = min(max(st.duration or 0.0, need), st.cap_s) + (request_s if load.drain else 0.0)
        total += est
        lines.append(f"  level {i}: ~{est:.0f} s")
    lines.append(f"  estimate: ~{total / 60:.1f} min ({request_s:.2f} s per request at 1 user, measured now; "
                 "closed-loop levels are lower bounds: latency grows with users)")  # fmt: skip
    return lines


def _cmd_sweep(args: argparse.Namespace) -> int:
    overrides = bench_overrides(args, read_scenario_file(args.scenario))
    scenario = load_scenario(args.scenario, overrides)
    summary = load_scenario_data(scenario.data)  # a dataset where nothing is usable: one line, no run folder
    if summary is not None:
        print(f"dataset: {summary.line()}", file=sys.stderr)
    if args.dry_run:
        print(f"scenario {scenario.name} ({args.scenario}):")
        print("\n".join(describe_levels(scenario)))
        if args.host:
            try:
                print("\n".join(estimate_levels(scenario, probe_request_s(args.host, scenario))))
            except UserError as exc:
                print(f"  estimate: none ({exc})")
        else:
            print("  estimate: give --host to time one request against the server")
        run_dir = args.run_dir or Path("reports/<time>-" + scenario.name)
        print("command: " + " ".join(locust_command(scenario, args.scenario, run_dir, host=args.host,
                                                    processes=args.processes, overrides=overrides)))  # fmt: skip
        return 0
    if args.run_dir is not None and holds_run(args.run_dir):
        if not args.overwrite:
            raise UserError(
                f"--run-dir {args.run_dir} already holds a run; choose another folder or pass --overwrite", exit_code=2
            )
        clear_run(args.run_dir)
    run_dir = args.run_dir or new_run_dir(scenario.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.adaptive:
        return _adaptive(args, scenario, run_dir)
    code = run_locust(scenario, args.scenario, run_dir, host=args.host, processes=args.processes, overrides=overrides)
    if not (run_dir / REQUESTS_CSV).exists():
        raise UserError(f"the run recorded nothing (Locust exited with {code}); see {run_dir / 'locust.log'}")
    if not args.no_report:
        report_and_table(run_dir)
    return code


def report_and_table(run_dir: Path) -> Path:
    """Build the run's report, print its per-level table and its path; return the path."""
    from analysis.pipeline import analyze
    from analysis.report import write_report
    from analysis.table import results_table

    summary = analyze(run_dir)
    report = write_report([summary], run_dir / REPORT_HTML)
    print(results_table(summary), file=sys.stdout)
    print(f"report: {report}")
    return report


def _adaptive(args: argparse.Namespace, scenario: Scenario, run_dir: Path) -> int:
    from vlab.commands.adaptive import adaptive_search

    best, probes = adaptive_search(
        scenario, run_dir, host=args.host, processes=args.processes, max_probes=args.max_probes
    )
    unit = "req/s" if scenario.load.open_loop else "users"
    if best is None:
        print(f"adaptive: no probed load met the SLO (lowest tried: {min(p.target for p in probes):g} {unit})")
    else:
        print(
            f"adaptive: highest load meeting the SLO: {best.target:g} {unit}, goodput "
            f"{best.goodput_req_per_s:.2f} req/s ({best.slo_fraction:.0%} of requests meeting it)"
        )
    if probes and not args.no_report:
        from analysis.report import build_report

        ordered = sorted(probes, key=lambda p: p.target)
        print(f"report: {build_report([Path(p.run_dir) for p in ordered], run_dir / 'index.html')}")
    return 0
