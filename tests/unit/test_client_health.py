"""The load generator's health thresholds and their wording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analysis.client_monitor import level_health
from vlab.core.client_health import MONITOR_HEADER, classify, worst
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import MONITOR_CSV
from vlab.locust.monitor import describe


def test_thresholds_and_wording() -> None:
    assert classify(0.95, 1.0) == "saturated" and classify(0.01, 50.0) == "starved" and classify(0.2, 2.0) == ""
    assert "saturated" in describe("n", 2, 0.9, 5.0) and "--processes" in describe("n", 2, 0.9, 5.0)
    assert "starved" in describe("n", 2, 0.01, 40.0)


def test_a_stall_of_the_clients_own_is_blocked_not_starved() -> None:
    # the first GPU lab: a 100 ms stall at a level start while the process used 140 ms of CPU in that second
    assert classify(0.14, 100.0) == "blocked" and "blocked" in describe("n", 1, 0.14, 100.0)
    assert classify(0.02, 100.0) == "starved"  # 20 ms of its own work cannot explain a 100 ms lag
    assert worst(["", "starved", "blocked"]) == "blocked" and worst(["", ""]) == ""


def test_a_level_flag_is_its_worst_sample(tmp_path: Path) -> None:
    # (level, cpu, lag ms, in flight): level 0's stall came before any stream was open
    rows = [(0, 0.10, 90.0, 0), (0, 0.12, 1.2, 4), (1, 0.14, 100.0, 4), (1, 0.05, 1.0, 4), (1, 0.01, 60.0, 4)]
    lines = [f"{i}.0,n1,{lv},{cpu},{lag},0,{n},,,,\n" for i, (lv, cpu, lag, n) in enumerate(rows)]
    (tmp_path / MONITOR_CSV).write_text(MONITOR_HEADER + "".join(lines))
    health = level_health(tmp_path).set_index("level")
    assert health.loc[0, "client_flag"] == "" and health.loc[0, "client_flagged_samples"] == 0
    assert health.loc[1, "client_flag"] == "blocked" and health.loc[1, "client_flagged_samples"] == 2


CACHE_PROBE = """
from locust import argument_parser
from vlab.locust.plugin import _cache_locust_defaults

original = argument_parser.default_args_dict()
_cache_locust_defaults()
first = argument_parser.default_args_dict()
first["host"] = "changed"
assert argument_parser.default_args_dict() == original  # each call its own copy
assert getattr(argument_parser.default_args_dict, "vlab_cached", False)
"""


def test_locust_defaults_are_built_once_per_worker() -> None:
    # In a child: importing Locust patches the whole process with gevent (see tests/unit/test_test_isolation.py).
    out = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
