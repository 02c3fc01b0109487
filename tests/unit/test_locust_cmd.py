"""`vlab locust`: the combined `--help` (Locust's options and the suite's, which `locust --help` cannot show) and the
command it hands to Locust."""

from __future__ import annotations

import subprocess
import sys

from vlab.commands.locust_cmd import DEFAULT_LOCUSTFILE, locust_argv
from vlab.core.paths import REPO_ROOT


def test_help_lists_locusts_options_and_the_suites() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vlab", "locust", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for option in ("--users", "--spawn-rate", "--run-time", "--headless", "--processes", "--csv", "--html"):
        assert option in out.stdout, option  # Locust's
    for option in ("--scenario", "--run-dir", "--overwrite", "--set", "--no-report"):
        assert option in out.stdout, option  # the suite's
    assert out.stdout.startswith("Usage: vlab locust")


def test_the_suites_locustfile_unless_one_is_given() -> None:
    assert locust_argv(["--headless"])[1:] == ["-m", "locust", "-f", str(DEFAULT_LOCUSTFILE), "--headless"]
    assert locust_argv(["-f", "mine.py", "-u", "2"])[3:] == ["-f", "mine.py", "-u", "2"]
    assert locust_argv(["--locustfile=mine.py"])[3:] == ["--locustfile=mine.py"]
