"""The interface every tool adapter implements, and small readers they share."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.peers.common import Aggregates, ClientRequest, ToolReport, WallToMono, Workload


@dataclass(frozen=True)
class Capabilities:
    """What a tool can do at all; the tables print these instead of leaving a blank."""

    per_event_times: bool
    """Keeps the arrival time of every token event (per-event ITL can be checked)."""
    bounded_by: str
    """`time` or `requests`: how a closed-loop run is bounded."""
    open_loop: bool
    """Has an arrival-rate (open-loop) mode."""
    note: str = ""


@dataclass
class Command:
    """A tool invocation: argv (without the taskset prefix), extra environment, files it needs written first."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """Relative path in the tool's output folder → content (configs, scenarios)."""


class Tool(Protocol):
    name: str
    caps: Capabilities

    def command(self, w: Workload, url: str, out: Path) -> Command: ...

    def parse(self, out: Path, clock: WallToMono) -> ToolReport: ...


def rid_from_response_id(value: str | None) -> int | None:
    """The fake server's request id from its response id (`cmpl-000000000042`, `chatcmpl-...`)."""
    if not value:
        return None
    tail = value.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def mean(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(vals) if vals else math.nan


def median(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def aggregates_from_requests(requests: list[ClientRequest], source: str) -> Aggregates:
    """Means and medians over the successful requests' own per-request values (for tools without a summary)."""
    ok = [r for r in requests if r.ok]
    return Aggregates(
        ttft_ms=mean(r.ttft_ms for r in ok),
        ttft_median_ms=median(r.ttft_ms for r in ok),
        itl_ms=mean(r.itl_ms for r in ok),
        itl_median_ms=median(r.itl_ms for r in ok),
        tpot_ms=mean(r.tpot_ms for r in ok),
        tpot_median_ms=median(r.tpot_ms for r in ok),
        output_tokens_mean=mean(float(r.output_tokens) for r in ok if r.output_tokens is not None),
        ok=len(ok),
        errors=sum(not r.ok and not r.cancelled for r in requests),
        source=source,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file, a trailing partial line dropped."""
    with open(path, newline="") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def fnum(value: str | None) -> float | None:
    """A CSV cell as a float (empty → None)."""
    return float(value) if value not in (None, "") else None
