"""Repeated runs of one scenario (`vlab sweep --repeat N`, or `vlab report` on a folder of runs): per level target,
each metric's value in every run, their mean, and the 95% Student t interval of that mean across the runs,
mean ± t(0.975, n − 1)·s/√n with s the runs' sample standard deviation (`vlab.core.stats.t_mean_ci`). The metrics
are `analysis.level_metrics.METRICS`, each run's value the point value its own report shows.

The interval is over runs, so it holds what changes from one run to the next (the machine's other load, the server's
state, the prompts drawn), which the within-run intervals of one report cannot. With 2 runs t(0.975, 1) = 12.7: three
or more runs give a usable interval. CV = s / mean. A level a run lacks (an interrupted last run) counts only the runs
that have it.

Files, in the repeats folder: `repeats.json` (the runs and every number), `repeats.csv` (one row per level × metric:
n, mean, ci_lo, ci_hi, std, cv and each run's value) and `index.html`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.level_metrics import DEFAULT_SHOWN, METRICS, LevelMetric, level_rows
from analysis.observations import fmt_target
from analysis.report import fmt_time, template_env
from analysis.summary import RunSummary
from vlab.core.errors import UserError
from vlab.core.jsonsafe import json_safe
from vlab.core.run_groups import REPEATS_CSV, REPEATS_JSON
from vlab.core.runfolder import REPORT_HTML
from vlab.core.stats import Interval, t_mean_ci


@dataclass(frozen=True)
class RepeatStat:
    """One metric at one level across the runs: each run's value (NaN where a run lacks it) and the t interval."""

    metric: LevelMetric
    values: tuple[float, ...]
    interval: Interval

    @property
    def n(self) -> int:
        return sum(1 for v in self.values if math.isfinite(v))

    @property
    def std(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return float(pd.Series(finite).std(ddof=1)) if len(finite) >= 2 else math.nan

    @property
    def cv(self) -> float:
        mean = self.interval.value
        return self.std / mean if math.isfinite(mean) and mean != 0 else math.nan

    @property
    def relative_half_width(self) -> float:
        """The interval's half width / the mean."""
        mean = self.interval.value
        return self.interval.half_width / abs(mean) if math.isfinite(mean) and mean != 0 else math.nan


@dataclass(frozen=True)
class RepeatLevel:
    target: float
    stats: tuple[RepeatStat, ...]


def summarize_repeats(summaries: Sequence[RunSummary]) -> list[RepeatLevel]:
    """Per level target (first seen first), every metric across the runs (module docstring)."""
    if not summaries:
        raise UserError("no runs to summarize")
    rows = [level_rows(s) for s in summaries]
    targets: list[float] = []
    for r in rows:
        targets += [t for t in r if t not in targets]
    levels = []
    for target in targets:
        stats = []
        for lm in METRICS.values():
            values = tuple(lm.value(r[target]).value if target in r else math.nan for r in rows)
            stats.append(RepeatStat(lm, values, t_mean_ci(list(values))))
        levels.append(RepeatLevel(target, tuple(stats)))
    return levels


def _run_names(summaries: Sequence[RunSummary], folder: Path) -> list[str]:
    names = []
    for s in summaries:
        try:
            names.append(str(s.run.path.resolve().relative_to(folder.resolve())))
        except ValueError:
            names.append(str(s.run.path))
    return names


def repeats_frame(levels: Sequence[RepeatLevel], names: Sequence[str]) -> pd.DataFrame:
    """repeats.csv: one row per level × metric with n, mean, the interval, std, cv and each run's value."""
    records = []
    for level in levels:
        for st in level.stats:
            rec: dict[str, Any] = {
                "target": level.target, "metric": st.metric.name, "unit": st.metric.unit, "n_runs": st.n,
                "mean": st.interval.value, "ci_lo": st.interval.lo, "ci_hi": st.interval.hi, "std": st.std,
                "cv": st.cv,
            }  # fmt: skip
            rec.update({name: v for name, v in zip(names, st.values, strict=True)})
            records.append(rec)
    return pd.DataFrame(records)


def repeats_json(summaries: Sequence[RunSummary], levels: Sequence[RepeatLevel], folder: Path) -> dict[str, Any]:
    """repeats.json: the runs (folder, status, seed) and, per level, every metric's values, mean and interval."""
    names = _run_names(summaries, folder)
    return json_safe(
        {
            "scenarios": sorted({s.run.scenario.name for s in summaries}),
            "open_loop": summaries[0].run.open_loop,
            "method": "per level: mean of the runs' values ± t(0.975, n-1)·s/sqrt(n) (95% Student t interval)",
            "runs": [
                {
                    "run": name,
                    "status": s.run.meta.status,
                    "seed": s.run.scenario.data.seed,
                    "server_profile": s.run.meta.server_profile,
                    "started_at": s.run.meta.started_at,
                }
                for name, s in zip(names, summaries, strict=True)
            ],
            "levels": [
                {
                    "target": lv.target,
                    "metrics": {
                        st.metric.name: {
                            "unit": st.metric.unit,
                            "n": st.n,
                            "mean": st.interval.value,
                            "ci_lo": st.interval.lo,
                            "ci_hi": st.interval.hi,
                            "std": st.std,
                            "cv": st.cv,
                            "values": list(st.values),
                        }
                        for st in lv.stats
                    },
                }
                for lv in levels
            ],
        }
    )


def render_repeats(summaries: Sequence[RunSummary], levels: Sequence[RepeatLevel], folder: Path) -> str:
    """The repeats page."""
    names = _run_names(summaries, folder)
    open_loop = summaries[0].run.open_loop
    runs = [
        {"name": name, "s": s, "report": f"{name}/{REPORT_HTML}" if (s.run.path / REPORT_HTML).exists() else None}
        for name, s in zip(names, summaries, strict=True)
    ]
    template = template_env().get_template("repeats.html.j2")
    return template.render(
        folder=folder.name,
        runs=runs,
        scenarios=sorted({s.run.scenario.name for s in summaries}),
        profiles=sorted({s.run.meta.server_profile or "—" for s in summaries}),
        levels=[{"target": fmt_target(lv.target, open_loop), "stats": lv.stats} for lv in levels],
        headline=[
            {
                "target": fmt_target(lv.target, open_loop),
                "stats": [st for st in lv.stats if st.metric.name in DEFAULT_SHOWN],
            }
            for lv in levels
        ],
        shown=[METRICS[n] for n in DEFAULT_SHOWN],
        generated=fmt_time(time.time()),
    )


def format_repeats(levels: Sequence[RepeatLevel], open_loop: bool) -> str:
    """The headline metrics as a text table: per level, mean ± the t interval's half width across the runs."""
    header = ["level", "runs", *(f"{n} ({METRICS[n].unit})" if METRICS[n].unit else n for n in DEFAULT_SHOWN)]
    rows = []
    for lv in levels:
        by_name = {st.metric.name: st for st in lv.stats}
        cells = [fmt_target(lv.target, open_loop), str(max(st.n for st in lv.stats))]
        for name in DEFAULT_SHOWN:
            iv = by_name[name].interval
            half = f" ±{iv.half_width:.3g}" if iv.known else ""
            cells.append(f"{iv.value:.4g}{half}" if math.isfinite(iv.value) else "—")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("mean across runs ± half width of the 95% t interval")
    return "\n".join(lines)


def write_repeats(summaries: Sequence[RunSummary], folder: Path, levels: Sequence[RepeatLevel] | None = None) -> Path:
    """repeats.json, repeats.csv and index.html in `folder` (`levels`: the summary, when already computed); return
    the page's path."""
    levels = levels if levels is not None else summarize_repeats(summaries)
    names = _run_names(summaries, folder)
    try:
        doc = repeats_json(summaries, levels, folder)
        (folder / REPEATS_JSON).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        repeats_frame(levels, names).to_csv(folder / REPEATS_CSV, index=False, float_format="%.6g",
                                            lineterminator="\n")  # fmt: skip
        page = folder / REPORT_HTML
        page.write_text(render_repeats(summaries, levels, folder), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{folder}: cannot write the repeats summary ({exc.strerror})") from None
    return page
