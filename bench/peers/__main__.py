"""`python -m bench.peers`: install the peers, or run the head-to-head benches and print the tables.

    .venv/bin/python -m bench.peers install [TOOL ...] [--force]
    .venv/bin/python -m bench.peers run --smoke                        # seconds per tool; exit 1 if one is broken
    .venv/bin/python -m bench.peers run [--bench 1,2,3] [--tools suite,aiperf] [--out reports/peers-<time>]
    .venv/bin/python -m bench.peers tables reports/peers-<time>       # rebuild tables.md from results.json

A run folder holds `results.json` (every number, the machine, load averages before and after, versions),
`tables.md`, and per bench, load and tool a folder with the tool's command line, version and raw output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.peers import execute, install
from bench.peers.benches import (
    EDGE_CASES,
    Agreement,
    AgreementPlan,
    CapacityPlan,
    Cores,
    EdgeResult,
    bench_agreement,
    bench_capacity,
    bench_edges,
    own_vllm,
    same_definition,
    smoke,
)
from bench.peers.common import REPO, WallToMono
from bench.peers.execute import tool_version
from bench.peers.metrics import Capacity, Observed, capacity, observed
from bench.peers.report import agreement_table, capacity_ratios, capacity_table, edge_table
from bench.peers.tools import TOOLS
from bench.peers.truth import parse_events


def _log(line: str) -> None:
    print(line, flush=True)


def _jsonable(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _machine() -> dict:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cmd_run(args: argparse.Namespace) -> int:
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        print(f"bench.peers run: unknown tool {unknown[0]!r} (known: {', '.join(TOOLS)})", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.peers run: needs two cores (tools on one, the fake server on the other)", file=sys.stderr)
        return 2
    out = Path(args.out or REPO / "reports" / time.strftime("peers-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = Cores(client=args.client_cpus, server=args.server_cpu)
    if args.nice:
        os.environ["PEERS_NICE"] = str(args.nice)
        execute.NICE = args.nice
    results: dict = {"machine_before": _machine(), "command": " ".join(sys.argv), "nice": args.nice, "tools": {}}
    config = install.load_config()
    for t in tools:
        try:
            if t in config.peers:  # installed by the bench itself (idempotent: a stamp file skips it in < 1 s)
                install.install(config.peers[t], config, log=_log)
            results["tools"][t] = tool_version(t)
        except (install.PeerError, subprocess.SubprocessError) as exc:
            results["tools"][t] = f"not installed: {exc}"
            _log(f"bench.peers: {t} could not be installed: {exc}")
    _log(f"bench.peers: results in {out}")
    if args.smoke:
        status = smoke(tools, out, cores, _log)
        results["smoke"] = status
        (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
        broken = [t for t, s in status.items() if s.startswith("BROKEN")]
        if broken:
            print(f"\nbench.peers smoke: BROKEN: {', '.join(broken)}", file=sys.stderr)
            return 1
        print("\nbench.peers smoke: every tool ran and matched the server's truth")
        return 0
    benches = {int(b) for b in args.bench.split(",")}
    tables: list[str] = []
    if 1 in benches:
        plan = CapacityPlan()
        if args.streams:
            plan = dataclasses.replace(plan, streams=tuple(int(x) for x in args.streams.split(",")))
        if args.modes:
            modes = tuple(args.modes.split(","))
            plan = dataclasses.replace(
                plan,
                modes=tuple(m for m in modes if m != "bulk"),
                bulk_streams=plan.bulk_streams if "bulk" in modes else 0,
            )
        cap = bench_capacity(tools, plan, out, cores, _log)
        results["bench1"] = {"plan": plan, "results": cap}
        tables += ["## Bench 1: client capacity and timing truth (fake server)", capacity_table(cap),
                   "", "Suite / best peer:", capacity_ratios(cap)]  # fmt: skip
        (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    if 2 in benches:
        cases = EDGE_CASES
        if args.cases:
            wanted = args.cases.split(",")
            cases = tuple(c for c in EDGE_CASES if c.name in wanted)
        edges = bench_edges(tools, out, cores, _log, cases)
        results["bench2"] = edges
        tables += ["## Bench 2: edge cases (fake server; ✓ = within max(0.5 ms, 5%) of the truth)", edge_table(edges)]
        (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    if 3 in benches:
        if args.own_server:
            with own_vllm(args.own_server, out / "bench3", _log) as url:
                plan3 = AgreementPlan(url=url)
                agree = bench_agreement(tools, plan3, out, cores, _log)
        else:
            plan3 = AgreementPlan(url=args.real_url)
            agree = bench_agreement(tools, plan3, out, cores, _log)
        results["bench3"] = {"plan": plan3, "results": agree}
        tables += [f"## Bench 3: agreement on a real server ({plan3.url})", agreement_table(agree)]
    results["machine_after"] = _machine()
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    text = "\n\n".join(tables)
    (out / "tables.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nload average before {results['machine_before']['loadavg']}, after {results['machine_after']['loadavg']}")
    return 0


_OPTIONAL = {"saturation_warning", "rid", "start_mono_s"}
"""Fields where None means 'not applicable', not a missing number."""


def _nan(d: dict) -> dict:
    """results.json writes NaN as null; turn the numbers back into NaN."""
    return {k: (math.nan if v is None and k not in _OPTIONAL else v) for k, v in d.items()}


def tables_from_results(results: dict) -> str:
    """Rebuild the Markdown tables from a results.json (the numbers as measured; the table code as it is now)."""
    parts: list[str] = []
    if "bench1" in results:
        cap = [Capacity(**_nan(r)) for r in results["bench1"]["results"]]
        parts += ["## Bench 1: client capacity and timing truth (fake server)", capacity_table(cap), "",
                  "Suite / best peer:", capacity_ratios(cap)]  # fmt: skip
    if "bench2" in results:
        edges = [
            EdgeResult(**{**r, "truth": Observed(**_nan(r["truth"])), "reported": Observed(**_nan(r["reported"]))})
            for r in results["bench2"]
        ]
        parts += ["## Bench 2: edge cases (fake server; ✓ = within max(0.5 ms, 5%) of the truth)", edge_table(edges)]
    if "bench3" in results:
        agree = [
            Agreement(**{**r, "reported": _nan(r["reported"]), "same_def": _nan(r["same_def"])})
            for r in results["bench3"]["results"]
        ]
        parts += [
            f"## Bench 3: agreement on a real server ({results['bench3']['plan']['url']})",
            agreement_table(agree),
        ]
    return "\n\n".join(parts)


def recompute_bench1(folder: Path, results: dict) -> None:
    """Recompute bench 1's rows from each run folder's raw files (the tool's output, `server-events.json`,
    `cpu-samples.json`) with the metric code as it is now; rows whose run gave no output keep their status."""
    warmup = results["bench1"]["plan"]["warmup_s"]
    rows = []
    for row in results["bench1"]["results"]:
        old = Capacity(**_nan(row))
        run = folder / "bench1" / f"{old.mode}-{old.streams}" / old.tool
        samples_path = run / "cpu-samples.json"
        if old.status != "ok" or not samples_path.exists():
            rows.append(row)
            continue
        report = TOOLS[old.tool].parse(run, WallToMono())
        samples = [tuple(x) for x in json.loads(samples_path.read_text())["samples"]]
        truth = parse_events(json.loads((run / "server-events.json").read_text()))
        new = Capacity(old.tool, old.mode, old.streams, saturation_warning=old.saturation_warning, notes=old.notes)
        capacity(new, report, truth, samples, 1.0 if old.mode == "bulk" else warmup)
        rows.append(dataclasses.asdict(new))
    results["bench1"]["results"] = rows


def recompute_bench2(folder: Path, results: dict) -> None:
    """Re-read bench 2's tool outputs with the parsers as they are now (the truth stays as measured)."""
    rows = []
    for row in results["bench2"]:
        run = folder / "bench2" / row["case"] / row["tool"]
        try:
            report = TOOLS[row["tool"]].parse(run, WallToMono())
        except Exception as exc:  # an output that still cannot be read keeps its status
            row = {**row, "status": row["status"] if row["status"] != "ok" else f"output unreadable: {exc}"}
            rows.append(row)
            continue
        rows.append({**row, "reported": dataclasses.asdict(observed(report)), "source": report.aggregates.source,
                     "status": "ok" if not row["status"].startswith("ok") else row["status"]})  # fmt: skip
    results["bench2"] = rows


def recompute_bench3(folder: Path, results: dict) -> None:
    """Recompute bench 3's same-definition numbers from each tool's output with the parsers as they are now."""
    rows = []
    for row in results["bench3"]["results"]:
        if row["status"] == "ok":
            report = TOOLS[row["tool"]].parse(folder / "bench3" / row["tool"], WallToMono())
            row = {**row, "same_def": same_definition(report.requests)}
        rows.append(row)
    results["bench3"]["results"] = rows


def cmd_tables(folder: Path, recompute: bool) -> int:
    path = folder / "results.json"
    if not path.exists():
        print(f"bench.peers tables: {path} not found", file=sys.stderr)
        return 2
    results = json.loads(path.read_text())
    if recompute and "bench1" in results:
        recompute_bench1(folder, results)
    if recompute and "bench2" in results:
        recompute_bench2(folder, results)
    if recompute and "bench3" in results:
        recompute_bench3(folder, results)
    if recompute:
        path.write_text(json.dumps(_jsonable(results), indent=1))
    text = tables_from_results(results)
    (folder / "tables.md").write_text(text + "\n")
    print(text)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so the running tool's and servers' process groups are stopped (their `finally`)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="Install the peers (idempotent).")
    p_install.add_argument("names", nargs="*")
    p_install.add_argument("--force", action="store_true")
    p_tables = sub.add_parser("tables", help="Rebuild tables.md from a results folder's results.json.")
    p_tables.add_argument("folder", type=Path)
    p_tables.add_argument("--recompute", action="store_true", help="Recompute the benches from the raw run files.")
    p_run = sub.add_parser("run", help="Run the benches.")
    p_run.add_argument("--smoke", action="store_true", help="Seconds per tool; fails loudly if one is broken.")
    p_run.add_argument("--bench", default="1,2,3")
    p_run.add_argument("--tools", default=",".join(TOOLS))
    p_run.add_argument("--out", help="Results folder (default reports/peers-<time>).")
    p_run.add_argument("--streams", help="Bench 1 stream counts (default 50,200,500,1000).")
    p_run.add_argument("--modes", help="Bench 1 modes (default bulk,staggered,lockstep).")
    p_run.add_argument("--cases", help="Bench 2 cases (default all: " + ",".join(c.name for c in EDGE_CASES) + ").")
    p_run.add_argument("--real-url", default="http://127.0.0.1:8100", help="Bench 3's vLLM server.")
    p_run.add_argument(
        "--own-server", type=int, metavar="PORT", help="Bench 3 on a vLLM of its own started on PORT (quiet)."
    )
    p_run.add_argument(
        "--nice", type=int, default=0, help="Run the tools and the fake server at this nice value (e.g. -5, root)."
    )
    p_run.add_argument("--client-cpus", default="0", help="taskset list for the tools (default 0).")
    p_run.add_argument("--server-cpu", type=int, default=1, help="Core for the fake server (default 1).")
    args = parser.parse_args(argv)
    if args.command == "install":
        return install.main(args.names, force=args.force)
    if args.command == "tables":
        return cmd_tables(args.folder, args.recompute)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
