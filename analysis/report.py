"""Build the self-contained HTML report of one run, or the comparison of several.

`build_report(run_dirs, out)` is the entry point (used by `vlab report` and `vlab sweep`). One run: index.html with
summary.csv and summary.json written next to the HTML. Several runs: a comparison page (overlaid latency-vs-throughput
curves, the Pareto view of throughput against per-user speed (`analysis.pareto`), and a side-by-side table of key
metrics at matching level targets, with ratios run k / run 1).

The template is rendered with autoescape on: prompts, model output and server error messages are untrusted text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import pandas as pd
import yaml

from analysis import plots
from analysis.observations import fmt_target
from analysis.pareto import pareto_context
from analysis.pipeline import analyze, write_summary_files
from analysis.summary import CI_METRICS, METRICS, SLO_ATTAINMENT, RunSummary
from vlab.core.errors import UserError
from vlab.core.runfolder import RAW_FILES, REPORT_HTML
from vlab.core.stats import MIN_SAMPLES

TEMPLATES = Path(__file__).parent / "templates"
PCT_STATS: tuple[tuple[str, str], ...] = (
    ("n", "n"),
    ("mean", "mean"),
    ("std", "std"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
)
COMPARE_METRICS: tuple[tuple[str, str], ...] = (
    ("output_tok_per_s", "output tok/s"),
    ("req_per_s", "req/s"),
    ("goodput_req_per_s", "goodput req/s"),
    ("ttft_p50", "TTFT p50 ms"),
    ("ttft_p99", "TTFT p99 ms"),
    ("itl_p50", "ITL p50 ms"),
    ("itl_p99", "ITL p99 ms"),
    ("e2e_p50", "E2E p50 ms"),
    ("error_rate", "error rate"),
)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Numbers for tables: '—' for missing, thousands separators, `digits` significant digits below 1000."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x == int(x) and abs(x) < 1000:
        return f"{int(x)}"
    return f"{x:.{digits}g}"


def fmt_ci(lo: Any, hi: Any) -> markupsafe.Markup:
    """A 95% interval as ` [lo–hi]`, or nothing when either end is missing (too few requests or windows)."""
    if fmt_num(lo) == "—" or fmt_num(hi) == "—":
        return markupsafe.Markup("")
    return markupsafe.Markup(' <span class="ci">[{}–{}]</span>').format(fmt_num(lo), fmt_num(hi))


def fmt_pct(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(x) else f"{x:.1%}"


def fmt_time(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def template_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, when=fmt_time)
    env.globals["ci"] = fmt_ci
    return env


def reproduce_command(s: RunSummary) -> str:
    """The command that reproduces the run: the one recorded, or `vlab sweep` on its scenario file."""
    meta = s.run.meta
    if meta.command:
        return meta.command
    path = meta.scenario_path or "SCENARIO.yaml"
    return f"vlab sweep {path} --host {meta.host}"


def _run_context(s: RunSummary) -> dict[str, Any]:
    meta = s.run.meta
    server = meta.server.model_dump(exclude={"models"}) if meta.server is not None else {}
    h = s.headline
    ol = s.run.open_loop
    duration = meta.ended_at - meta.started_at if meta.ended_at else None
    rows = s.table.to_dict(orient="records")
    first_chunk_differs = bool(
        "first_chunk_p50" in s.table and ((s.table["first_chunk_p50"] - s.table["ttft_p50"]).abs() > 0.5).any()
    )
    metric_tables = [
        {"key": key, "title": title, "unit": unit, "rows": rows, "ci": key in CI_METRICS}
        for key, (title, unit) in METRICS.items()
        if (s.table.get(f"{key}_n", pd.Series(dtype=float)) > 0).any()  # e.g. no retrieval table outside RAG runs
    ]
    if first_chunk_differs:
        metric_tables.append(
            {"key": "first_chunk", "title": "First chunk (vllm bench serve's TTFT: role-only chunks included)",
             "unit": "ms", "rows": rows, "ci": False}
        )  # fmt: skip
    scenario_yaml = yaml.safe_dump(s.run.scenario.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return {
        "s": s,
        "name": s.run.name,
        "label": s.run.label,
        "meta": meta,
        "scenario": s.run.scenario,
        "scenario_yaml": scenario_yaml,
        "command": reproduce_command(s),
        "server": server,
        "status": meta.status,
        "duration_s": duration,
        "open_loop": ol,
        "embeddings": s.run.scenario.api.endpoint == "embeddings",
        "unit": "req/s" if ol else "users",
        "headline": h,
        "max_tps_at": fmt_target(h.max_output_tps_target, ol) if h.max_output_tps_target is not None else None,
        "knee_at": fmt_target(h.knee_target, ol) if h.knee_target is not None else None,
        "slo_at": fmt_target(h.best_slo_target, ol) if h.best_slo_target is not None else None,
        "slo": s.run.slo,
        "slo_attainment": SLO_ATTAINMENT,
        "min_samples": MIN_SAMPLES,
        "levels": rows,
        "metric_tables": metric_tables,
        "stats": PCT_STATS,
        "errors": s.errors.to_dict(orient="records"),
        "observations": s.observations,
        "warmup_s": s.run.warmup_s,
        "cooldown_s": s.run.cooldown_s,
        "dataset_line": (meta.dataset or {}).get("line"),
    }


def render_run(s: RunSummary) -> str:
    """The HTML of a single-run report."""
    ctx = _run_context(s)
    ctx["figures"] = plots.run_figures(s)
    ctx["srv"] = _server_context(s)
    ctx["gpu"] = s.gpu
    ctx["pareto"] = pareto_context([s])
    ctx["generated"] = fmt_time(time.time())
    return template_env().get_template("report.html.j2").render(**ctx)


def comparison_rows(summaries: Sequence[RunSummary]) -> list[dict[str, Any]]:
    """One row per level target present in the first run: per metric, each run's value and the ratio run k / run 1
    (runs lacking that target show '—')."""
    base = summaries[0].table
    rows = []
    for target in base["target"]:
        row: dict[str, Any] = {"target": float(target), "metrics": []}
        picks = []
        for s in summaries:
            match = s.table[s.table["target"] == target]
            picks.append(match.iloc[0] if len(match) else None)
        for key, title in COMPARE_METRICS:
            ref = picks[0][key] if picks[0] is not None else math.nan
            values = []
            for p in picks:
                v = float(p[key]) if p is not None else math.nan
                ratio = v / ref if math.isfinite(v) and math.isfinite(ref) and ref != 0 else math.nan
                values.append({"value": v, "ratio": ratio})
            row["metrics"].append({"title": title, "values": values})
        rows.append(row)
    return rows


def render_comparison(summaries: Sequence[RunSummary], across: Sequence[str] = ()) -> str:
    """The HTML of a comparison of several runs (first run = reference for ratios); `across`: observations across
    the runs (e.g. `analysis.engines.observe_engines`), shown above each run's own."""
    env = template_env()
    runs = [_run_context(s) for s in summaries]
    for r, s in zip(runs, summaries, strict=True):
        r["srv"] = _server_context(s, figure=False)
    return env.get_template("compare.html.j2").render(
        runs=runs,
        server_panels=plots.server_compare_panels(summaries),
        curves=plots.latency_vs_throughput(summaries),
        rows=comparison_rows(summaries),
        pareto=pareto_context(summaries),
        across=list(across),
        generated=fmt_time(time.time()),
    )


# ---------------------------------------------------------------------------------------------- server metrics
def _server_context(s: RunSummary, figure: bool = True) -> dict[str, Any]:
    """Template values of the server-metrics section: availability/reason, headline, per-level rows, panels."""
    srv = s.server
    if srv is None or not srv.available:
        reason = srv.series.reason if srv is not None else "not computed"
        return {"available": False, "reason": reason}
    h = srv.headline
    ol = s.run.open_loop
    return {
        "available": True,
        "reason": "",
        "h": h,
        "names": srv.series.info.get("names") or {},
        "peak_kv_at": fmt_target(h.peak_kv_target, ol) if h.peak_kv_target is not None else None,
        "first_waiting_at": fmt_target(h.first_waiting_target, ol) if h.first_waiting_target is not None else None,
        "rows": srv.table.to_dict(orient="records"),
        "panels": plots.server_panels(s) if figure else None,
    }


def write_report(summaries: Sequence[RunSummary], out: Path | str | None = None, across: Sequence[str] = ()) -> Path:
    """Render analyzed runs and write the HTML; return its path (`across`: see `render_comparison`).

    One run: `out` defaults to RUN_DIR/index.html; summary.csv and summary.json go next to the HTML. Several runs:
    `out` defaults to <first run>/compare.html. Raw run files are never overwritten.
    """
    if not summaries:
        raise UserError("no run folder given")
    dirs = [s.run.path for s in summaries]
    if len(summaries) == 1:
        target = Path(out) if out is not None else dirs[0] / REPORT_HTML
        html = render_run(summaries[0])
    else:
        target = Path(out) if out is not None else dirs[0] / "compare.html"
        html = render_comparison(summaries, across)
    if target.name in RAW_FILES and target.parent.resolve() in {d.resolve() for d in dirs}:
        raise UserError(f"{target}: refusing to overwrite a raw run file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
        if len(summaries) == 1:
            write_summary_files(summaries[0], target.parent)
    except OSError as exc:
        raise UserError(f"{target}: cannot write the report ({exc.strerror})") from None
    return target


def build_report(run_dirs: Sequence[Path | str], out: Path | str | None = None) -> Path:
    """Analyze the run folders (`analysis.pipeline.analyze`) and write their report (`write_report`)."""
    if not run_dirs:
        raise UserError("no run folder given")
    return write_report([analyze(d) for d in run_dirs], out)
