"""The load generator's own health per level, from `client_monitor.csv` (see `vlab.locust.monitor`).

Per level: the highest CPU share of one core any load process used, the worst gevent hub lag (ms), and a flag:
`saturated` (a process's own CPU passed `vlab.locust.monitor.CPU_SATURATED`), `starved` (the hub lagged past
`HUB_LAG_SATURATED_MS` while the process barely ran: the machine was busy elsewhere), or "" (timings trustworthy).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vlab.locust.monitor import CPU_SATURATED, HUB_LAG_SATURATED_MS, MONITOR_CSV


def level_health(run_dir: Path) -> pd.DataFrame:
    """One row per level with samples: level, client_cpu_max, client_lag_max_ms, client_flag."""
    path = Path(run_dir) / MONITOR_CSV
    columns = ["level", "client_cpu_max", "client_lag_max_ms", "client_flag"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    try:
        samples = pd.read_csv(path, on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError):
        return pd.DataFrame(columns=columns)
    samples = samples.dropna(subset=["level", "cpu", "hub_lag_ms"])
    rows = []
    for level, group in samples.groupby("level"):
        cpu, lag = float(group.cpu.max()), float(group.hub_lag_ms.max())
        flag = "saturated" if cpu >= CPU_SATURATED else "starved" if lag >= HUB_LAG_SATURATED_MS else ""
        rows.append({"level": int(level), "client_cpu_max": cpu, "client_lag_max_ms": lag, "client_flag": flag})
    return pd.DataFrame(rows, columns=columns)


def attach(table: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """The level table with the client-health columns (NaN / "" where no samples exist, e.g. older runs)."""
    health = level_health(run_dir)
    merged = table.merge(health, on="level", how="left")
    merged["client_flag"] = merged["client_flag"].fillna("")
    for column in ("client_cpu_max", "client_lag_max_ms"):
        merged[column] = merged[column].astype(float).fillna(math.nan)
    return merged
