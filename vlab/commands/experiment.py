"""`vlab experiment prefix|kv|engines|matrix`: ready-made A/B experiments, each one comparison report.

- `prefix`: `scenarios/prefix-cache.yaml` (a ~900-token shared system prefix) against `cpu-smollm2` (prefix caching
  on), then `cpu-smollm2-noprefix` (off). Shows what prefix caching buys in TTFT.
- `kv`: `scenarios/kv-pressure.yaml` (1, 4, 16 users of 200-token prompts, 128 output tokens) against `cpu-smollm2`
  (2 GiB KV cache, 93,184 tokens), then `cpu-smollm2-tinykv` (24 blocks, 3,072 tokens). Shows queueing and
  preemption when the KV cache is too small for the batch.
- `engines`: `scenarios/engines.yaml` (1, 4, 8 users, 64-token prompts, ≤ 32 output tokens) against the same model
  served three ways: vLLM (`cpu-smollm2`), `transformers serve` (`cpu-smollm2-transformers`) and `transformers serve
  --continuous-batching` (`cpu-smollm2-transformers-cb`). Shows what continuous batching and paged attention buy,
  and what they do not at one user (`analysis.engines`: the observations across the runs).
- `matrix FILE`: a server-flag matrix, profiles × flag overrides × one scenario, resumable
  (`vlab.commands.matrix`; docs/pareto-and-matrix.md).

Each profile's server is started on a free port in its own process group, the scenario is run headless, and the
server is stopped (whatever happens) before the next one starts: one server at a time. Everything lands in
`reports/<time>-experiment-<name>/`: one run folder per profile (each with its own report and `server.log`),
`compare.html` (the comparison, first profile = reference) and `experiment.json` (the headline numbers). The
comparison report's path is the last line printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlab.commands.helptext import plain
from vlab.core.errors import UserError
from vlab.core.jsonsafe import json_safe
from vlab.core.paths import REPORTS_DIR, SCENARIOS_DIR
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, SERVER_LOG, new_run_dir
from vlab.core.scenario import load_scenario

if TYPE_CHECKING:
    from analysis.summary import RunSummary
    from server.profile import ServerProfile

Across = Callable[[list["ServerProfile"], list["RunSummary"]], list[str]]
"""Observations across an experiment's runs, from the profiles and the runs' summaries (same order)."""


def engine_observations(profiles: list[ServerProfile], summaries: list[RunSummary]) -> list[str]:
    """`analysis.engines.observe_engines` for runs on different engines: vLLM and Transformers' continuous batching
    count as batching; the KV capacity is vLLM's (from its /metrics) or the Transformers profile's paged cache."""
    from analysis.engines import EngineRun, observe_engines

    runs = []
    for profile, s in zip(profiles, summaries, strict=True):
        capacity = None
        if profile.engine == "vllm" and s.server is not None and s.server.available:
            capacity = s.server.headline.kv_capacity_tokens
        elif profile.cb_block_size is not None and profile.cb_num_blocks is not None:
            capacity = profile.cb_block_size * profile.cb_num_blocks
        batching = profile.engine == "vllm" or profile.continuous_batching
        runs.append(EngineRun(profile.name, s, batching, int(capacity) if capacity else None))
    return observe_engines(runs)


@dataclass(frozen=True)
class Experiment:
    """Two (or more) server profiles run on one scenario."""

    name: str
    scenario: Path
    profiles: tuple[str, ...]
    question: str
    across: Across | None = None


EXPERIMENTS: dict[str, Experiment] = {
    "prefix": Experiment(
        "prefix",
        SCENARIOS_DIR / "prefix-cache.yaml",
        ("cpu-smollm2", "cpu-smollm2-noprefix"),
        "What does automatic prefix caching buy in TTFT when every prompt shares a long system prefix?",
    ),
    "kv": Experiment(
        "kv",
        SCENARIOS_DIR / "kv-pressure.yaml",
        ("cpu-smollm2", "cpu-smollm2-tinykv"),
        "What happens when the KV cache cannot hold the batch: queueing, preemption, latency?",
    ),
    "engines": Experiment(
        "engines",
        SCENARIOS_DIR / "engines.yaml",
        ("cpu-smollm2", "cpu-smollm2-transformers", "cpu-smollm2-transformers-cb"),
        "What do continuous batching and paged attention buy: vLLM against transformers serve, with and without "
        "continuous batching, on the same model?",
        engine_observations,
    ),
}


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="Run a ready A/B experiment (prefix caching, KV pressure, engines) or a server-flag matrix, and compare.",
        description=plain(__doc__),
    )
    parser.add_argument(
        "name",
        choices=[*sorted(EXPERIMENTS), "matrix"],
        help="prefix: caching on/off; kv: default vs tiny KV; engines: vLLM vs Transformers; matrix: a matrix FILE",
    )
    parser.add_argument("matrix_file", nargs="?", type=Path, metavar="FILE", help="matrix: the matrix YAML file")
    parser.add_argument("--scenario", type=Path, help="Override the experiment's scenario file.")
    parser.add_argument(
        "--profiles", nargs="+", metavar="PROFILE", help="Override the profiles (first = reference of the ratios)."
    )
    parser.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        type=Path,
        help="Experiment folder (default: reports/<time>-experiment-<name>).",
    )
    parser.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args: argparse.Namespace) -> int:
    if args.name == "matrix" or args.matrix_file is not None:
        return _cmd_matrix(args)
    exp = EXPERIMENTS[args.name]
    scenario_path = args.scenario or exp.scenario
    profiles = tuple(args.profiles or exp.profiles)
    out = run_experiment(exp, scenario_path, profiles, args.out)
    print(f"report: {out}")
    return 0


def _cmd_matrix(args: argparse.Namespace) -> int:
    from vlab.commands.matrix import run_matrix

    if args.name != "matrix" or args.matrix_file is None:
        raise UserError("a matrix FILE goes with 'vlab experiment matrix FILE' only", exit_code=2)
    if args.profiles:
        raise UserError("--profiles: a matrix takes its profiles from its file", exit_code=2)
    return run_matrix(args.matrix_file, args.out, scenario_file=args.scenario)


def run_experiment(exp: Experiment, scenario_path: Path, profiles: tuple[str, ...], out: Path | None = None) -> Path:
    """Run the scenario once per profile (one server at a time); build and return the comparison report's path."""
    from analysis.pipeline import analyze
    from analysis.report import build_report, write_report
    from server.launcher import start_server
    from server.profile import load_profile
    from vlab.client.http import find_free_port
    from vlab.commands.runner import run_locust

    scenario = load_scenario(scenario_path)
    loaded = [load_profile(p) for p in profiles]  # fail on a bad profile before starting anything
    folder = out or new_run_dir(f"experiment-{exp.name}", REPORTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"experiment {exp.name}: {exp.question}\nfolder {folder}", flush=True)
    runs: list[Path] = []
    load: list[dict[str, float]] = []
    for profile in loaded:
        run_dir = new_run_dir(f"{scenario.name}-{profile.name}", folder)
        port = find_free_port()
        print(f"[{profile.name}] starting {profile.engine} on 127.0.0.1:{port} ...", flush=True)
        with start_server(profile, port=port, log_path=run_dir / SERVER_LOG) as server:
            print(f"[{profile.name}] healthy after {server.startup_s:.1f} s; running {scenario.name}", flush=True)
            before = os.getloadavg()[0]
            run_locust(scenario, scenario_path, run_dir, host=server.base_url, server_profile=profile.name)
            load.append({"before": before, "after_1min": os.getloadavg()[0], "after_5min": os.getloadavg()[1]})
        print(f"[{profile.name}] server stopped", flush=True)
        if not (run_dir / REQUESTS_CSV).exists():
            raise UserError(f"{profile.name}: the run recorded nothing; see {run_dir / 'locust.log'}")
        build_report([run_dir], run_dir / REPORT_HTML)
        runs.append(run_dir)
    summaries = [analyze(r) for r in runs]
    across = exp.across(loaded, summaries) if exp.across is not None else []
    report = write_report(summaries, folder / "compare.html", across)
    outcome = experiment_outcome(summaries)
    for run, machine in zip(outcome, load, strict=True):
        run["load_average"] = machine  # the machine's 1- and 5-min load average around the run (others' work too)
    record = {"experiment": exp.name, "scenario": str(scenario_path), "runs": outcome, "across": across}
    (folder / "experiment.json").write_text(json.dumps(record, indent=2) + "\n")
    for line in format_outcome(outcome) + across:
        print(line, flush=True)
    return report


def experiment_outcome(summaries: list[RunSummary]) -> list[dict[str, Any]]:
    """Per run: profile, and per level the client TTFT/E2E means and p50s, ITL p50, output tok/s, mean completion
    tokens, and the server's max waiting, peak KV usage, preemptions and prefix hit rate (NaN → null where the
    server has no /metrics); plus the run-wide server headline."""
    out = []
    for s in summaries:
        run_dir = s.run.path
        levels = []
        srv_rows = {}
        if s.server is not None and s.server.available:
            srv_rows = {int(r["level"]): r for r in s.server.table.to_dict(orient="records")}
        for r in s.table.to_dict(orient="records"):
            srv = srv_rows.get(int(r["level"]), {})
            levels.append(
                {
                    "target": r["target"],
                    "ttft_mean_ms": r["ttft_mean"],
                    "ttft_p50_ms": r["ttft_p50"],
                    "e2e_p50_ms": r["e2e_p50"],
                    "itl_p50_ms": r["itl_p50"],
                    "output_tok_per_s": r["output_tok_per_s"],
                    "n_measured": r["n_measured"],
                    "completion_tokens_mean": completion_mean(s, int(r["level"])),
                    "max_waiting": srv.get("max_waiting", math.nan),
                    "peak_kv_usage": srv.get("peak_kv_usage", math.nan),
                    "preemptions": srv.get("preemptions", math.nan),
                    "prefix_hit_rate": srv.get("prefix_hit_rate", math.nan),
                    "server_ttft_mean_ms": srv.get("server_ttft_mean_ms", math.nan),
                    "server_queue_mean_ms": srv.get("server_queue_mean_ms", math.nan),
                }
            )
        h = s.server.headline if s.server is not None and s.server.available else None
        out.append(
            {
                "run": str(run_dir),
                "profile": s.run.meta.server_profile,
                "levels": json_safe(levels),
                "server": json_safe(
                    {
                        "peak_kv_usage": h.peak_kv_usage,
                        "kv_capacity_tokens": h.kv_capacity_tokens,
                        "max_waiting": h.max_waiting,
                        "preemptions": h.preemptions,
                        "prefix_hit_rate": h.prefix_hit_rate,
                    }
                    if h is not None
                    else {}
                ),
            }
        )
    return out


def completion_mean(s: RunSummary, level: int) -> float:
    """Mean completion tokens of the level's successful requests (usage counts; NaN when none)."""
    df = s.run.requests
    ok = df[(df["level"] == level) & df["ok"].astype(bool) & (df["completion_tokens"] >= 0)]
    return float(ok["completion_tokens"].mean()) if len(ok) else math.nan


def format_outcome(outcome: list[dict[str, Any]]) -> list[str]:
    """One line per run and level: TTFT mean/p50, output tok/s, waiting, KV peak, preemptions, prefix hit rate."""

    def f(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    lines = []
    for run in outcome:
        for lv in run["levels"]:
            lines.append(
                f"{run['profile'] or '?':>22} {lv['target']:>5g} users | TTFT mean {f(lv['ttft_mean_ms'], '7.0f')} ms"
                f" p50 {f(lv['ttft_p50_ms'], '7.0f')} ms | {f(lv['output_tok_per_s'], '6.1f')} out tok/s"
                f" | waiting max {f(lv['max_waiting'], '3.0f')} | KV peak {f(lv['peak_kv_usage'], '4.0%')}"
                f" | preemptions {f(lv['preemptions'], '3.0f')} | prefix hits {f(lv['prefix_hit_rate'], '4.0%')}"
            )
    return lines
