"""`vlab report RUN_DIR [RUN_DIR ...] [-o FILE]`: the HTML report of a run, or a comparison of several runs.

One run: writes RUN_DIR/index.html (or FILE) plus summary.csv and summary.json next to it. Several runs: writes a
comparison page to FILE (default: <first run>/compare.html). Raw run files are never modified.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Build the HTML report of a run folder, or compare several.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="Run folder(s) (reports/<run>).")
    parser.add_argument("-o", "--output", type=Path, help="HTML file to write.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    out = build_report(args.run_dirs, args.output)
    print(f"report: {out}")
    return 0
