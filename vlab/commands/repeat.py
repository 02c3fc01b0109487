"""`vlab sweep SCENARIO --repeat N`: the scenario N times, as run folders `r1` … `rN` inside the output folder, each
with its own report, then the repeats summary (`analysis.repeats`: per level, each metric's mean across the runs
and its 95% t interval) as `repeats.json`, `repeats.csv` and the folder's `index.html`.

Repeat k draws its prompts with `data.seed` + k − 1: the same workload with other prompts, so that one repeat does
not hit the prefix cache the one before filled (the same seed sends the same prompts again, and the second run's TTFT
would be a cache hit's). The repeats run back to back against the same server. An interrupted repeat keeps the runs
so far; the summary covers the runs that recorded something. `vlab report FOLDER` rebuilds the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlab.core.errors import ConfigError, UserError
from vlab.core.run_groups import repeat_dir, repeat_dirs
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, clear_run, holds_run, new_run_dir
from vlab.core.scenario import Scenario, load_scenario

INTERRUPTED = (130, 143)


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds a run, or repeats, unless `overwrite` (then the earlier repeats are cleared)."""
    if holds_run(out):
        raise UserError(f"--run-dir {out} holds a single run; choose another folder for --repeat", exit_code=2)
    earlier = [d for d in repeat_dirs(out) if holds_run(d)]
    if earlier and not overwrite:
        raise UserError(f"--run-dir {out} already holds repeats ({', '.join(d.name for d in earlier)}); choose "
                        "another folder or pass --overwrite", exit_code=2)  # fmt: skip
    for d in earlier:
        clear_run(d)


def run_repeats(args: argparse.Namespace, scenario: Scenario, overrides: list[str]) -> int:
    """Run the scenario `args.repeat` times and write the summary; return the worst exit code (130/143 when
    interrupted, after the summary of the runs so far)."""
    from analysis.pipeline import analyze
    from analysis.repeats import format_repeats, summarize_repeats, write_repeats
    from analysis.report import write_report
    from analysis.table import results_table
    from vlab.commands.runner import run_locust

    n = args.repeat
    if n < 1:
        raise ConfigError(f"--repeat {n}: expected at least 1")
    if args.adaptive:
        raise UserError("--repeat and --adaptive do not combine: repeat the scenario the search found", exit_code=2)
    out = args.run_dir or new_run_dir(f"{scenario.name}-x{n}")
    prepare_folder(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    codes = []
    for k in range(1, n + 1):
        seed = scenario.data.seed + k - 1
        run_overrides = [*overrides, f"data.seed={seed}"]
        run_dir = repeat_dir(out, k)
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"repeat {k}/{n}: {run_dir} (data.seed={seed})", file=sys.stderr, flush=True)
        code = run_locust(load_scenario(args.scenario, run_overrides), args.scenario, run_dir, host=args.host,
                          processes=args.processes, overrides=run_overrides)  # fmt: skip
        codes.append(code)
        if (run_dir / REQUESTS_CSV).exists():
            summary = analyze(run_dir)
            summaries.append(summary)
            if not args.no_report:
                write_report([summary], run_dir / REPORT_HTML)
                print(results_table(summary))
        elif code not in INTERRUPTED:
            raise UserError(f"repeat {k}: the run recorded nothing (Locust exited with {code}); see "
                            f"{run_dir / 'locust.log'}")  # fmt: skip
        if code in INTERRUPTED:
            break
    if summaries:
        levels = summarize_repeats(summaries)
        page = write_repeats(summaries, out, levels)
        print(format_repeats(levels, summaries[0].run.open_loop))
        print(f"repeats: {page}")
    stopped = [c for c in codes if c in INTERRUPTED]
    return stopped[0] if stopped else max(codes)
