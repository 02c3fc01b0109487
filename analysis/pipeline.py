"""`analyze(run_dir)`: the one pipeline from a run folder to everything a report, a table or a command shows.

load (`analysis.load`) → per-level summary and headline (`analysis.summary`) → the load generator's own health
(`analysis.client_monitor`) → the server's `/metrics` view (`analysis.server_metrics`) → GPU telemetry and the physical
limit (`analysis.gpu`; one line for runs without a GPU) → observations (`analysis.observations`). Each step only
computes; this module is the only one that knows the order.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from analysis.client_monitor import attach
from analysis.gpu import gpu_context
from analysis.load import load_run
from analysis.observations import observe
from analysis.server_metrics import summarize_server
from analysis.summary import RunSummary, errors_table, headline, summarize_levels
from vlab.core.jsonsafe import json_safe
from vlab.core.runfolder import SUMMARY_CSV, SUMMARY_JSON


def analyze(run_dir: Path | str) -> RunSummary:
    """Load and summarize one run folder (raw files are never modified)."""
    run = load_run(run_dir)
    table, per_level, tokens = summarize_levels(run)
    table = attach(table, run.path)
    summary = RunSummary(run, table, errors_table(run), headline(table, bool(run.slo)), per_level, tokens)
    summary.server = summarize_server(run, table)
    summary.gpu = gpu_context(run.path, table, run.open_loop)
    summary.observations = observe(summary)
    return summary


def summary_json(summary: RunSummary) -> dict[str, Any]:
    """What summary.json holds: the run, its headline, observations, levels, errors and the server's view."""
    run = summary.run
    return json_safe(
        {
            "run": str(run.path),
            "label": run.label,
            "status": run.meta.status,
            "status_reason": run.meta.status_reason,
            "open_loop": run.open_loop,
            "warmup_s": run.warmup_s,
            "cooldown_s": run.cooldown_s,
            "slo": run.slo,
            "headline": asdict(summary.headline),
            "observations": summary.observations,
            "levels": summary.table.to_dict(orient="records"),
            "errors": summary.errors.to_dict(orient="records"),
            "server_metrics": summary.server.to_json() if summary.server is not None else None,
        }
    )


def write_summary_files(summary: RunSummary, folder: Path) -> None:
    """summary.csv (one row per level) and summary.json in `folder`."""
    summary.table.to_csv(folder / SUMMARY_CSV, index=False, float_format="%.6g", lineterminator="\n")
    (folder / SUMMARY_JSON).write_text(json.dumps(summary_json(summary), indent=2) + "\n")
