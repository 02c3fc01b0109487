"""The load generator's own health per level, from `client_monitor.csv` (columns and thresholds:
`vlab.core.client_health`).

Per level: the highest CPU share of one core any load process used, the worst gevent hub lag (ms), and a flag:
the worst of its samples' (`saturated`, `blocked`, `starved` or "" for trustworthy timings, as
`vlab.core.client_health.classify` decides for each sample), with the number of flagged samples. Only samples with
requests in flight count: a stall while no stream is open delays sends, which are stamped when they happen, and
distorts no latency.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vlab.core.client_health import classify, worst
from vlab.core.runfolder import MONITOR_CSV

COLUMNS = ["level", "client_cpu_max", "client_lag_max_ms", "client_flag", "client_flagged_samples", "client_samples"]


def read_samples(run_dir: Path) -> pd.DataFrame:
    """client_monitor.csv as numbers (an empty frame when it is missing or unreadable; older runs lack columns)."""
    path = Path(run_dir) / MONITOR_CSV
    if not path.exists():
        return pd.DataFrame()
    try:
        samples = pd.read_csv(path, on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return pd.DataFrame()
    return samples.dropna(subset=[c for c in ("level", "cpu", "hub_lag_ms") if c in samples])


def level_health(run_dir: Path) -> pd.DataFrame:
    """One row per level with samples: level, client_cpu_max, client_lag_max_ms, client_flag,
    client_flagged_samples and client_samples (one per process per PERIOD_S)."""
    samples = read_samples(run_dir)
    if samples.empty or not {"level", "cpu", "hub_lag_ms"} <= set(samples.columns):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for level, group in samples.groupby("level"):
        # a stall with no stream open delays only sends, which are stamped when they happen: it distorts nothing
        busy = group.in_flight > 0 if "in_flight" in group else pd.Series(True, index=group.index)
        flags = [
            classify(float(c), float(lag)) if b else ""
            for c, lag, b in zip(group.cpu, group.hub_lag_ms, busy, strict=True)
        ]
        rows.append({
            "level": int(level), "client_cpu_max": float(group.cpu.max()),
            "client_lag_max_ms": float(group.hub_lag_ms.max()), "client_flag": worst(flags),
            "client_flagged_samples": sum(1 for f in flags if f), "client_samples": len(flags),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def attach(table: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """The level table with the client-health columns (NaN / "" where no samples exist, e.g. older runs)."""
    health = level_health(run_dir)
    merged = table.merge(health, on="level", how="left")
    merged["client_flag"] = merged["client_flag"].fillna("")
    for column in ("client_cpu_max", "client_lag_max_ms"):
        merged[column] = merged[column].astype(float).fillna(math.nan)
    return merged
