"""Calling the `vlab` command in-process, as a user would from the shell."""

from __future__ import annotations

import pytest


def run_vlab(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`vlab ARGV...` → (exit code, stdout, stderr)."""
    from vlab.commands.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def locust_cmd(scenario: object, host: str, *args: str, locustfile: str = "llm.py") -> list[str]:
    """`python -m locust -f locustfiles/LOCUSTFILE --scenario S --host H ARGS...`, to run in a subprocess (Locust's
    import patches the process with gevent: never in the pytest process)."""
    import sys

    from vlab.core.paths import REPO_ROOT

    path = str(REPO_ROOT / "locustfiles" / locustfile)
    return [sys.executable, "-m", "locust", "-f", path, "--scenario", str(scenario), "--host", host, *args]


def sweep_cmd(scenario: object, host: str, *args: str) -> list[str]:
    """`python -m vlab sweep S --host H ARGS...`, to run in a subprocess."""
    import sys

    return [sys.executable, "-m", "vlab", "sweep", str(scenario), "--host", host, *args]
