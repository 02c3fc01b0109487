"""Calling the `vlab` command in-process, as a user would from the shell."""

from __future__ import annotations

import pytest


def run_vlab(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`vlab ARGV...` → (exit code, stdout, stderr)."""
    from vlab.commands.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
