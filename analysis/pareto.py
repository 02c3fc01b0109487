"""The Pareto view: which configuration and load give the most total throughput for a given speed per user.

Each point is one level of one run: x = its output throughput (output tokens received in the level's window / the
window's length, tok/s: `output_tok_per_s`), y = the output speed one request sees, `per_user_tok_s` = 1000 / TPOT
mean (ms), TPOT = (E2E − TTFT) / (output tokens − 1) per request, averaged over the level's measured requests. Both
are better higher. A point *dominates* another when it is at least as good on both and better on one; the *front* is
the points no other point dominates: for each per-user speed, the highest throughput any configuration reached.

Points are labelled by their configuration (the run's server profile when the runs' profiles differ, else the run
folder's name) and their load (the level's target). Levels with no measured request have no point; levels with fewer
than `MIN_SAMPLES` measured requests are marked rough.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.ticker import EngFormatter

from analysis.level_metrics import METRICS
from analysis.observations import fmt_target
from analysis.plots import to_data_uri
from analysis.summary import RunSummary
from vlab.core.stats import MIN_SAMPLES


@dataclass(frozen=True)
class ParetoPoint:
    """One level of one run, placed by throughput (x) and per-user speed (y), both tok/s."""

    config: str
    target: float
    throughput: float
    per_user: float
    open_loop: bool = False
    n: int = 0
    throughput_lo: float = math.nan
    throughput_hi: float = math.nan
    ttft_p50: float = math.nan

    @property
    def load(self) -> str:
        return fmt_target(self.target, self.open_loop)

    @property
    def label(self) -> str:
        return f"{self.config} @ {self.load}"

    @property
    def rough(self) -> bool:
        return self.n < MIN_SAMPLES

    def dominates(self, other: ParetoPoint) -> bool:
        """At least as good on both axes and better on one."""
        return (
            self.throughput >= other.throughput
            and self.per_user >= other.per_user
            and (self.throughput > other.throughput or self.per_user > other.per_user)
        )


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point dominates, by throughput ascending (per-user speed then descends; ties keep their
    input order). Points with a NaN coordinate are left out; identical points are all on the front (neither dominates
    the other). Every pair is compared: a report holds tens of points."""
    finite = [p for p in points if math.isfinite(p.throughput) and math.isfinite(p.per_user)]
    front = [p for p in finite if not any(q.dominates(p) for q in finite)]
    return sorted(front, key=lambda p: (p.throughput, -p.per_user))


def config_labels(summaries: Sequence[RunSummary]) -> list[str]:
    """Each run's configuration label: its server profile when the runs' profiles all differ, else its folder name
    (numbered when folder names repeat too)."""
    profiles = [s.run.meta.server_profile for s in summaries]
    if all(profiles) and len(set(profiles)) == len(profiles):
        return [str(p) for p in profiles]
    names = [s.run.name for s in summaries]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}: {n}" for i, n in enumerate(names)]


def points(summaries: Sequence[RunSummary]) -> list[ParetoPoint]:
    """One point per level with measured requests, of every run."""
    per_user = METRICS["per_user_tok_s"]
    out = []
    for label, s in zip(config_labels(summaries), summaries, strict=True):
        for row in s.table.to_dict(orient="records"):
            if int(row["n_measured"]) <= 0:
                continue
            out.append(
                ParetoPoint(
                    config=label, target=float(row["target"]), throughput=float(row["output_tok_per_s"]),
                    per_user=per_user.value(row).value, open_loop=s.run.open_loop, n=int(row["n_measured"]),
                    throughput_lo=float(row["output_tok_per_s_lo"]), throughput_hi=float(row["output_tok_per_s_hi"]),
                    ttft_p50=float(row["ttft_p50"]),
                )
            )  # fmt: skip
    return out


def _gap(hi: float, lo: float) -> float:
    """An error bar's length, hi − lo, 0 where an end is unknown."""
    return max(hi - lo, 0.0) if math.isfinite(hi) and math.isfinite(lo) else 0.0


def pareto_figure(pts: Sequence[ParetoPoint], front: Sequence[ParetoPoint]) -> str:
    """Per-user speed against throughput: each configuration's levels in load order (one hue each, labelled with
    their load), the front as a dashed line through ringed points; horizontal bars = throughput's 95% interval."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    configs = list(dict.fromkeys(p.config for p in pts))
    palette = sns.color_palette("tab10", max(len(configs), 1))
    for k, config in enumerate(configs):
        mine = sorted((p for p in pts if p.config == config), key=lambda p: p.target)
        color = palette[k % len(palette)]
        x = [p.throughput for p in mine]
        y = [p.per_user for p in mine]
        xerr = [
            [_gap(p.throughput, p.throughput_lo) for p in mine],
            [_gap(p.throughput_hi, p.throughput) for p in mine],
        ]
        ax.errorbar(x, y, xerr=xerr, fmt="o-", color=color, label=config, capsize=2, lw=1, alpha=0.85)
        for p in mine:
            if math.isfinite(p.throughput) and math.isfinite(p.per_user):
                ax.annotate(f"{p.target:g}", (p.throughput, p.per_user), textcoords="offset points", xytext=(5, 4),
                            fontsize=7)  # fmt: skip
    if front:
        ax.plot([p.throughput for p in front], [p.per_user for p in front], "--", color="black", lw=1.2,
                label="Pareto front", zorder=0)  # fmt: skip
        ax.plot([p.throughput for p in front], [p.per_user for p in front], "o", ms=12, mfc="none", mec="black",
                mew=1.5)  # fmt: skip
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("total output throughput (tok/s)")
    ax.set_ylabel("output speed per request (tok/s = 1000 / TPOT mean)")
    unit = "req/s" if pts and pts[0].open_loop else "users"
    ax.set_title(f"Throughput vs per-user speed (points labelled with their load, {unit}; ringed = on the front)")
    ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def pareto_context(summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """The `pareto.html.j2` variables: every point with whether it is on the front (or which front point dominates
    it), the front in order, the figure, and whether there is anything to show."""
    pts = points(summaries)
    front = pareto_front(pts)
    on_front = {id(p) for p in front}
    rows = []
    for p in sorted(pts, key=lambda p: (p.config, p.target)):
        by = next((f for f in front if f.dominates(p)), None) if id(p) not in on_front else None
        rows.append({"p": p, "front": id(p) in on_front, "dominated_by": by.label if by else None})
    return {
        "available": bool(front),
        "rows": rows,
        "front": front,
        "figure": pareto_figure(pts, front) if front else None,
        "min_samples": MIN_SAMPLES,
    }
