"""`vlab`: the suite's front door for what is not plain Locust.

Each feature module owns its subcommand: it exposes `add_subcommand(subparsers)`, which adds a parser whose
`func` default takes the parsed arguments and returns the exit code. User mistakes raise `UserError` and are
printed here as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlab.core.errors import UserError

# Modules that contribute subcommands, in the order `vlab --help` lists them.
SUBCOMMAND_MODULES = (
    "vlab.commands.demo",
    "vlab.commands.serve",
    "vlab.commands.sweep",
    "vlab.commands.locust_cmd",
    "vlab.commands.report",
    "vlab.commands.experiment",
    "vlab.commands.lab",
    "vlab.commands.gateway",
    "rag.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlab", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional part (e.g. rag without its extras) is not installed
            if exc.name and name.startswith(exc.name.split(".")[0]):
                continue
            raise
        module.add_subcommand(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"vlab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
