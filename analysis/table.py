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


def _cell(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if spec == "{:d}":
        return f"{int(value):d}"  # type: ignore[call-overload]
    return spec.format(value)


def results_table(summary: RunSummary) -> str:
    """The table as text, one row per level (times in ms)."""
    unit = "req/s" if summary.run.open_loop else "users"
    header = [title if key != "target" else f"{title} ({unit})" for key, title, _ in COLUMNS]
    rows = []
    for rec in summary.table.to_dict(orient="records"):
        cells = [_cell(rec.get(key), spec) for key, _, spec in COLUMNS]
        if int(rec.get("n_measured", 0)) < MIN_SAMPLES:
            cells[1] += "*"
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if any(int(rec.get("n_measured", 0)) < MIN_SAMPLES for rec in summary.table.to_dict(orient="records")):
        lines.append(f"* fewer than {MIN_SAMPLES} measured requests: percentiles are rough")
    lines.append(f"run {summary.run.name}: {summary.run.meta.status}"
                 + (f" ({summary.run.meta.status_reason})" if summary.run.meta.status_reason else ""))  # fmt: skip
    return "\n".join(lines)
