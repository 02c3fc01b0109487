"""`vlab locust [LOCUST OPTIONS]`: plain Locust with the suite's locustfile, and a `--help` that lists both.

Locust prints `--help` before it imports a locustfile, so options a locustfile adds through
`init_command_line_parser` (`--scenario`, `--run-dir`, `--set`, ...) never appear in `locust --help`
(locustio/locust#2917). `vlab locust --help` prints Locust's help with the suite's option group added; any other
arguments are handed to `python -m locust` unchanged, with `-f locustfiles/llm.py` when no `-f` is given, so every
Locust flag keeps its meaning (with a scenario: see `vlab/locust/options.py`).
"""

from __future__ import annotations

import argparse
import os
import sys

from vlab.commands.helptext import plain
from vlab.core.paths import REPO_ROOT

DEFAULT_LOCUSTFILE = REPO_ROOT / "locustfiles" / "llm.py"


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "locust",
        help="Locust itself, with the suite's locustfile; --help lists Locust's and the suite's options",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,  # -h/--help goes to the combined help below
        prefix_chars="\0",  # every argument, dashes and all, is Locust's
    )
    parser.add_argument("locust_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_cmd_locust)


def locust_argv(args: list[str]) -> list[str]:
    """`python -m locust` with `args`, and the suite's locustfile unless `-f`/`--locustfile` is among them."""
    has_file = any(a in ("-f", "--locustfile") or a.startswith(("-f=", "--locustfile=")) for a in args)
    prefix = [] if has_file else ["-f", str(DEFAULT_LOCUSTFILE)]
    return [sys.executable, "-m", "locust", *prefix, *args]


def combined_help() -> str:
    """Locust's own `--help`, with the suite's options as one more group."""
    from locust.argument_parser import get_parser  # imports Locust (and gevent's patching): only for --help

    from vlab.locust.options import add_arguments

    parser = get_parser()
    add_arguments(parser)
    return parser.format_help().replace("Usage: locust ", "Usage: vlab locust ", 1)


def _cmd_locust(args: argparse.Namespace) -> int:
    rest = list(args.locust_args)
    if any(a in ("-h", "--help") for a in rest):
        print(combined_help())
        return 0
    argv = locust_argv(rest)
    os.execv(argv[0], argv)  # Locust owns the process from here: its signals, its exit code
    return 0  # not reached
