"""The run folder: every file a run writes is named here, and `run.json`'s schema is the one `RunMeta` model that
the writer (`vlab.locust.plugin`) and the readers (`analysis`) share.

Layout of `reports/<run>/`:

| file | written by | holds |
|---|---|---|
| `run.json` | the plugin, at start and at stop | `RunMeta`: scenario, server, times, status |
| `requests.csv`, `tokens.csv` | the sinks | `vlab.core.records` |
| `levels.csv` | the plugin | one `Level` per load level: index, target, start/end (Unix s), how it ended |
| `client_monitor.csv` | the sinks | the load generator's own health (`vlab.core.client_health`) |
| `server_metrics.csv/.json/.log` | `vlab.telemetry.server_metrics` | the server's `/metrics` samples |
| `gpu_metrics.csv/.json/.log` | `vlab.telemetry.gpu` | NVML samples of the GPUs |
| `server.json`, `server.log` | the commands that start a server | the server profile's facts, its log |
| `locust.log`, `locust_*.csv` | Locust (`vlab sweep`, headless runs) | Locust's own log and `--csv` files |
| `index.html`, `summary.csv`, `summary.json` | `analysis.report` | the report |
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlab.core.errors import UserError
from vlab.core.paths import REPO_ROOT, REPORTS_DIR
from vlab.core.records import READABLE_FORMATS
from vlab.core.scenario import Scenario

RUN_JSON = "run.json"
REQUESTS_CSV = "requests.csv"
TOKENS_CSV = "tokens.csv"
LEVELS_CSV = "levels.csv"
MONITOR_CSV = "client_monitor.csv"
SERVER_METRICS_CSV = "server_metrics.csv"
SERVER_METRICS_JSON = "server_metrics.json"
SERVER_METRICS_LOG = "server_metrics.log"
GPU_METRICS_CSV = "gpu_metrics.csv"
GPU_METRICS_JSON = "gpu_metrics.json"
GPU_METRICS_LOG = "gpu_metrics.log"
SERVER_JSON = "server.json"
SERVER_LOG = "server.log"
LOCUST_LOG = "locust.log"
LOCUST_CSV_PREFIX = "locust"
REPORT_HTML = "index.html"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
RAW_FILES = frozenset({RUN_JSON, REQUESTS_CSV, TOKENS_CSV, LEVELS_CSV})
"""What a report never overwrites."""

RunStatus = Literal["running", "completed", "stopped", "interrupted", "failed", "not_started"]
"""How a run ended: `completed` (every stage ran), `stopped` (stopped from the web UI), `interrupted` (SIGINT or
SIGTERM), `failed` (the stages ran but the server was unreachable or most requests failed: `status_reason` says
which), `not_started` (nothing was sent: `status_reason` says why)."""
LevelEnd = Literal["time", "requests", "cap", "stop", "ui"]
"""Why a level ended: its duration passed (and its request count was reached), its request count was reached after
its duration, its cap (`max_duration`) cut it short of its request count, the run stopped, or the web UI moved on."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoadGeneratorInfo(_Model):
    hostname: str
    platform: str
    cpus: int | None = None


class ServerInfoMeta(_Model):
    """What the server said about itself before the load (`vlab.client.api.probe_server`)."""

    model: str
    models: dict[str, Any] = Field(default_factory=dict, description="The /v1/models answer, as received.")
    max_model_len: int | None = None
    vllm_version: str | None = None
    notes: list[str] = Field(default_factory=list, description="Endpoints the server lacks (/metrics, /version, ...).")


class LostWorker(_Model):
    """A worker process the master stopped hearing from mid-run. Its records that reached the master are on disk;
    what it had not yet sent (at most its last batch interval, 0.5 s) and its streams in flight are not."""

    worker: str = Field(description="Locust's id of the worker (`host_uuid`).")
    at: float = Field(description="When the master marked it missing, Unix seconds.")
    node: str | None = Field(default=None, description="Its `node` in requests.csv; None if it never sent a batch.")
    records_received: int = Field(default=0, description="requests.csv rows the master got from it.")
    reason: str = ""


class WorkersMeta(_Model):
    lost: list[LostWorker] = Field(default_factory=list)
    batches_rejected: int = 0


class RunMeta(_Model):
    """`run.json`: what ran, against what, when, and how it ended. Times are Unix seconds."""

    format: int
    scenario: Scenario
    scenario_path: str | None = None
    command: str | None = Field(default=None, description="The command line that ran (keys never appear in it).")
    host: str
    suite_commit: str | None = None
    load_generator: LoadGeneratorInfo
    client: str = Field(default="suite", description="What streamed the tokens; anything but 'suite' is a comparison.")
    started_at: float
    ended_at: float | None = None
    status: RunStatus = "running"
    status_reason: str | None = None
    interrupted_at: float | None = None
    records: int | None = Field(default=None, description="Requests written to requests.csv.")
    server: ServerInfoMeta | None = None
    prompt_overhead_tokens: dict[str, int] | None = None
    prompt_lengths: str | None = Field(
        default=None,
        description="How synthetic prompt lengths were made exact: server /tokenize, a local tokenizer, "
        "or approximate.",
    )
    server_profile: str | None = None
    dataset: dict[str, Any] | None = Field(default=None, description="What the dataset loader kept and skipped.")
    workers: WorkersMeta | None = None

    def write(self, run_dir: Path) -> None:
        write_json_atomic(run_dir / RUN_JSON, self.model_dump(mode="json"))


def read_run_meta(run_dir: Path) -> RunMeta:
    """run.json, validated; one `UserError` line naming the file for anything unreadable."""
    from pydantic import ValidationError

    path = run_dir / RUN_JSON
    if not path.is_file():
        raise UserError(f"{path}: run.json not found (is {run_dir} a run folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run.json ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    fmt = data.get("format")
    if fmt not in READABLE_FORMATS:
        shown = "none" if fmt is None else repr(fmt)
        raise UserError(
            f"{path}: records format {shown}, but this suite reads formats "
            f"{', '.join(map(str, sorted(READABLE_FORMATS)))}; re-run the scenario or use the suite version that "
            "recorded it"
        )
    try:
        return RunMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{path}: {where}: {first['msg']}") from None


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """run.json as written (a plain mapping), for tools and tests that look at the file itself."""
    data: dict[str, Any] = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    return data


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


def holds_run(run_dir: Path) -> bool:
    """True when `run_dir` already holds a run (a run.json or records): a new run must not reuse it."""
    return any((run_dir / name).exists() for name in (RUN_JSON, REQUESTS_CSV, TOKENS_CSV, LEVELS_CSV))


def clear_run(run_dir: Path) -> None:
    """Remove every file of an earlier run from `run_dir` (for `--overwrite`), keeping `server.json`/`server.log`
    that a command may have written for this run just before."""
    keep = {SERVER_JSON, SERVER_LOG}
    for path in run_dir.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_generator_info() -> LoadGeneratorInfo:
    return LoadGeneratorInfo(hostname=socket.gethostname(), platform=platform.platform(), cpus=os.cpu_count())


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- levels
@dataclass(slots=True)
class Level:
    """A load level as it ran: index, target (users or arrivals/s), wall-clock start and end (Unix s), and why it
    ended (`LevelEnd`; "" while it runs). `end_s` is when the level stopped starting requests; with draining, its
    last requests finish before the next level's `start_s`."""

    index: int
    target: float
    start_s: float
    end_s: float | None = None
    ended_by: str = ""


LEVELS_HEADER = "level,target,start_s,end_s,ended_by\n"


def write_levels(run_dir: Path, levels: list[Level]) -> None:
    """levels.csv, replaced whole (atomically)."""
    lines = [LEVELS_HEADER]
    lines += [
        f"{lv.index},{lv.target:g},{lv.start_s:.6f},{'' if lv.end_s is None else f'{lv.end_s:.6f}'},{lv.ended_by}\n"
        for lv in levels
    ]
    tmp = run_dir / (LEVELS_CSV + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, run_dir / LEVELS_CSV)
