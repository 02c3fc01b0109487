"""The load generator's own health per level, from `client_monitor.csv` (columns and thresholds:
`vlab.core.client_health`).

Per level: the highest CPU share of one core any load process used, the worst gevent hub lag (ms), and a flag:
the worst of its samples' (`saturated`, `blocked`, `starved` or "" for trustworthy timings, as
`vlab.core.client_health.classify` decides for each sample), with the number of flagged samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vlab.core.client_health import classify, worst
from vlab.core.runfolder import MONITOR_CSV

COLUMNS = ["level", "client_cpu_max", "client_lag_max_ms", "client_flag", "client_flagged_samples"]


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
    client_flagged_samples."""
    samples = read_samples(run_dir)
    if samples.empty or not {"level", "cpu", "hub_lag_ms"} <= set(samples.columns):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for level, group in samples.groupby("level"):
        flags = [classify(float(c), float(lag)) for c, lag in zip(group.cpu, group.hub_lag_ms, strict=True)]
        rows.append({
            "level": int(level), "client_cpu_max": float(group.cpu.max()),
            "client_lag_max_ms": float(group.hub_lag_ms.max()), "client_flag": worst(flags),
            "client_flagged_samples": sum(1 for f in flags if f),
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
