"""The load generator's own health per level, from `client_monitor.csv` (columns and thresholds:
`vlab.core.client_health`).

Per level: the highest CPU share of one core any load process used, the worst gevent hub lag (ms), and a flag:
`saturated`, `starved` or "" (timings trustworthy), as `vlab.core.client_health.classify` decides.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vlab.core.client_health import classify
from vlab.core.runfolder import MONITOR_CSV

COLUMNS = ["level", "client_cpu_max", "client_lag_max_ms", "client_flag"]


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
    """One row per level with samples: level, client_cpu_max, client_lag_max_ms, client_flag."""
    samples = read_samples(run_dir)
    if samples.empty or not {"level", "cpu", "hub_lag_ms"} <= set(samples.columns):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for level, group in samples.groupby("level"):
        cpu, lag = float(group.cpu.max()), float(group.hub_lag_ms.max())
        rows.append(
            {"level": int(level), "client_cpu_max": cpu, "client_lag_max_ms": lag, "client_flag": classify(cpu, lag)}
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def attach(table: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """The level table with the client-health columns (NaN / "" where no samples exist, e.g. older runs)."""
    health = level_health(run_dir)
    merged = table.merge(health, on="level", how="left")
    merged["client_flag"] = merged["client_flag"].fillna("")
    for column in ("client_cpu_max", "client_lag_max_ms"):
        merged[column] = merged[column].astype(float).fillna(math.nan)
    return merged
