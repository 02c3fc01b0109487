"""`vlab compare BASELINE CANDIDATE --fail-if RULE ...`: a regression gate for CI.

    vlab compare reports/base reports/cand --fail-if "ttft_p99 > +10%" --fail-if "output_tok_s < -5%" --junit gate.xml
    vlab compare --baseline A1 A2 A3 --candidate B1 B2 B3 --rules gate.yaml --level 4

Each side is one run folder, several (`--baseline A1 A2 A3`), or a folder of runs such as a `vlab sweep --repeat N`
folder. Rules (`--fail-if`, repeatable, and/or `--rules FILE` holding `rules: [...]`) are `METRIC > THRESHOLD` or
`METRIC < THRESHOLD`: `+10%` / `-5%` a relative change, `+50ms` a signed absolute change, `0.01` an unsigned limit
on the candidate. Every rule is checked at every level target all runs share (or each `--level TARGET`).

A rule FAILS only when the candidate's 95% interval is past the threshold set from the baseline's interval: for
`ttft_p99 > +10%`, when the candidate's low end exceeds 1.10 × the baseline's high end. With one run per side the
intervals are the run's own (percentile bootstrap, per-second counts, Wilson); with n ≥ 2 runs per side, the Student t
interval of the runs' mean. Point values that break a rule inside the noise show `pass (noise)`.

Prints the table (level, metric, baseline, candidate, change, rule, verdict); `--junit FILE` writes one testcase per
rule × level. Exit code: 0 every rule holds (or no rule given: the table only), 1 a rule FAILS (or a side has no
value at a level), 2 bad input (a rule, a rules file, a folder, levels the runs do not share).

Metrics (docs/regression-gate.md):"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from vlab.commands.helptext import plain
from vlab.core.errors import UserError

if TYPE_CHECKING:
    from analysis.summary import RunSummary


def _metrics_line() -> str:
    from analysis.level_metrics import METRICS

    return textwrap.fill(", ".join(METRICS), width=116, initial_indent="    ", subsequent_indent="    ")


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="regression gate: compare a candidate's runs with a baseline's under rules (exit 1 when one breaks)",
        description=plain(__doc__) + "\n" + _metrics_line(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sides", nargs="*", type=Path, metavar="RUN", help="BASELINE CANDIDATE (run folders)")
    parser.add_argument("--baseline", nargs="+", type=Path, metavar="RUN", help="the baseline's run folder(s)")
    parser.add_argument("--candidate", nargs="+", type=Path, metavar="RUN", help="the candidate's run folder(s)")
    parser.add_argument("--fail-if", dest="rules", action="append", default=[], metavar="RULE",
                        help='a rule, e.g. "ttft_p99 > +10%%" (repeatable)')  # fmt: skip
    parser.add_argument("--rules", dest="rules_file", type=Path, metavar="FILE", help="YAML file: rules: [...]")
    parser.add_argument("--level", dest="levels", type=float, action="append", metavar="TARGET",
                        help="compare only this level target (users or req/s; repeatable)")  # fmt: skip
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    parser.set_defaults(func=_cmd_compare)


def _sides(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """(baseline folders, candidate folders) as given; a usage `UserError` for any other mix."""
    if args.sides and (args.baseline or args.candidate):
        raise UserError("give BASELINE CANDIDATE or --baseline ... --candidate ..., not both", exit_code=2)
    if args.sides:
        if len(args.sides) != 2:
            raise UserError(f"expected BASELINE CANDIDATE, got {len(args.sides)} folder(s); for several runs per "
                            "side use --baseline A1 A2 --candidate B1 B2", exit_code=2)  # fmt: skip
        return [args.sides[0]], [args.sides[1]]
    if not (args.baseline and args.candidate):
        raise UserError("give BASELINE CANDIDATE, or both --baseline and --candidate", exit_code=2)
    return list(args.baseline), list(args.candidate)


def _analyze_side(folders: list[Path]) -> tuple[list[Path], list[RunSummary]]:
    from analysis.pipeline import analyze
    from vlab.core.run_groups import runs_in

    runs = [run for folder in folders for run in runs_in(folder)]
    summaries = []
    for run in runs:
        try:
            summaries.append(analyze(run))
        except UserError as exc:  # a corrupt or empty run is bad input to the gate
            raise UserError(str(exc), exit_code=2) from None
    return runs, summaries


def _cmd_compare(args: argparse.Namespace) -> int:
    from analysis.gate import compare, format_table, junit_xml, load_rules, parse_rule
    from analysis.level_metrics import DEFAULT_SHOWN

    base_dirs, cand_dirs = _sides(args)
    rules = [parse_rule(text) for text in args.rules]
    if args.rules_file is not None:
        rules += load_rules(args.rules_file)
    base_runs, baseline = _analyze_side(base_dirs)
    cand_runs, candidate = _analyze_side(cand_dirs)
    checks = compare(baseline, candidate, rules, args.levels, shown=DEFAULT_SHOWN)
    for name, runs in (("baseline", base_runs), ("candidate", cand_runs)):
        how = "within-run 95% intervals" if len(runs) == 1 else f"t intervals across {len(runs)} runs"
        print(f"{name}: {', '.join(str(r) for r in runs)} ({how})")
    print(format_table(checks))
    if args.junit is not None:
        try:
            args.junit.parent.mkdir(parents=True, exist_ok=True)
            args.junit.write_text(junit_xml(checks, [str(r) for r in base_runs], [str(r) for r in cand_runs]))
        except OSError as exc:
            raise UserError(f"{args.junit}: cannot write the JUnit file ({exc.strerror})", exit_code=2) from None
    if not rules:
        print("no rules given (--fail-if, --rules): nothing judged")
        return 0
    failed = [c for c in checks if c.failed]
    for c in failed:
        print(f"{c.verdict}: {c.reason}", file=sys.stderr)
    print(f"compare: {len(failed)} of {len(checks)} checks failed" if failed else f"compare: all {len(checks)} hold")
    return 1 if failed else 0
