"""The per-level results table printed at the end of a run (`vlab sweep`, `vlab report --table`, headless Locust
runs), as `vllm bench serve` and GuideLLM print theirs: requests, TTFT/ITL/TPOT/E2E p50 and p99 (ms), output tok/s
and errors per level. Levels with fewer than `MIN_SAMPLES` measured requests are marked.
"""

from __future__ import annotations

import math

from analysis.summary import RunSummary
from vlab.core.stats import MIN_SAMPLES

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("target", "level", "{:g}"),
    ("n_measured", "measured", "{:d}"),
    ("ttft_p50", "TTFT p50", "{:.1f}"),
    ("ttft_p99", "p99", "{:.1f}"),
    ("itl_p50", "ITL p50", "{:.2f}"),
    ("itl_p99", "p99", "{:.2f}"),
    ("tpot_p50", "TPOT p50", "{:.2f}"),
    ("e2e_p50", "E2E p50", "{:.0f}"),
    ("e2e_p99", "p99", "{:.0f}"),
    ("output_tok_per_s", "out tok/s", "{:.1f}"),
    ("n_failed", "failed", "{:d}"),
    ("n_cut_off", "cut off", "{:d}"),
)


EMBEDDINGS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    *COLUMNS[:2],
    ("e2e_p50", "latency p50", "{:.1f}"),
    ("e2e_p99", "p99", "{:.1f}"),
    ("req_per_s", "req/s", "{:.2f}"),
    ("input_tok_per_s", "input tok/s", "{:.0f}"),
    *COLUMNS[-2:],
)
"""An embeddings run's columns: no tokens are generated, so latency (E2E), requests/s and input tokens/s."""


def _cell(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if spec == "{:d}":
        return f"{int(value):d}"  # type: ignore[call-overload]
    return spec.format(value)


def results_table(summary: RunSummary) -> str:
    """The table as text, one row per level (times in ms)."""
    unit = "req/s" if summary.run.open_loop else "users"
    columns = EMBEDDINGS_COLUMNS if summary.run.scenario.api.endpoint == "embeddings" else COLUMNS
    header = [title if key != "target" else f"{title} ({unit})" for key, title, _ in columns]
    rows = []
    for rec in summary.table.to_dict(orient="records"):
        cells = [_cell(rec.get(key), spec) for key, _, spec in columns]
        if int(rec.get("n_measured", 0)) < MIN_SAMPLES:
            cells[1] += "*"
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if any(int(rec.get("n_measured", 0)) < MIN_SAMPLES for rec in summary.table.to_dict(orient="records")):
        lines.append(f"* fewer than {MIN_SAMPLES} measured requests: percentiles are rough")
    records = summary.table.to_dict(orient="records")
    lines += [_schedule_lag_line(rec) for rec in records if rec.get("schedule_lag_all_n")]
    lines.append(f"run {summary.run.name}: {summary.run.meta.status}"
                 + (f" ({summary.run.meta.status_reason})" if summary.run.meta.status_reason else ""))  # fmt: skip
    return "\n".join(lines)


def _schedule_lag_line(rec: dict) -> str:
    """One open-loop level's schedule lag (send − scheduled arrival; a trace: − its recorded time) over all it sent."""
    p50, p99, top = (_cell(rec[f"schedule_lag_all_{k}_ms"], "{:.1f}") for k in ("p50", "p99", "max"))
    n = int(rec["schedule_lag_all_n"])
    return (
        f"level {rec['level']}: schedule lag (send − scheduled) over {n} requests: p50 {p50}, p99 {p99}, max {top} ms"
    )
