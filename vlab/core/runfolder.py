"""The run folder: where a run's records land, and `run.json`, the metadata that says what ran.

Layout of `reports/<run>/`: `run.json`, `requests.csv`, `tokens.csv` (see `vlab.core.records`), `levels.csv` (one row per
load level: index, target, start and end in Unix seconds), `locust_*.csv` (Locust's own `--csv` output, when asked
for), and `index.html` once `vlab report` has run.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vlab.core.paths import REPO_ROOT, REPORTS_DIR
from vlab.core.records import RECORDS_FORMAT
from vlab.locust.load import Level

RUN_JSON = "run.json"
LEVELS_CSV = "levels.csv"


def new_run_dir(name: str, root: Path = REPORTS_DIR) -> Path:
    """A fresh folder `root/<UTC timestamp>-<name>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    path = root / f"{stamp}-{safe}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{stamp}-{safe}-{suffix}"
    path.mkdir(parents=True)
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RUN_JSON).read_text())


def base_metadata(scenario: dict[str, Any], host: str) -> dict[str, Any]:
    return {
        "format": RECORDS_FORMAT,
        "scenario": scenario,
        "host": host,
        "suite_commit": git_commit(),
        "load_generator": {"hostname": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "started_at": time.time(),
        "ended_at": None,
        "status": "running",
    }


def write_levels(run_dir: Path, levels: list[Level]) -> None:
    lines = ["level,target,start_s,end_s\n"]
    lines += [
        f"{lv.index},{lv.target:g},{lv.start_s:.6f},{'' if lv.end_s is None else f'{lv.end_s:.6f}'}\n" for lv in levels
    ]
    tmp = run_dir / (LEVELS_CSV + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, run_dir / LEVELS_CSV)
