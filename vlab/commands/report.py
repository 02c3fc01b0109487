"""`vlab report RUN_DIR [RUN_DIR ...] [-o FILE] [--table]`: the HTML report of a run, or a comparison of several.

One run: writes RUN_DIR/index.html (or FILE) plus summary.csv and summary.json next to it. Several runs: writes a
comparison page to FILE (default: <first run>/compare.html). Raw run files are never modified. `--table` also prints
each run's per-level results table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlab.commands.helptext import plain


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the HTML report of a run folder, or compare several",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folder(s) (reports/<run>)")
    parser.add_argument("-o", "--output", type=Path, help="HTML file to write (default: in the first run folder)")
    parser.add_argument("--table", action="store_true", help="also print the per-level results table of each run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.pipeline import analyze
    from analysis.report import write_report
    from analysis.table import results_table

    summaries = [analyze(d) for d in args.run_dirs]
    out = write_report(summaries, args.output)
    if args.table:
        for summary in summaries:
            print(results_table(summary))
    print(f"report: {out}")
    return 0
