"""Report figures (matplotlib Agg + seaborn styling), each returned as a base64 PNG `data:` URI.

Figures stay small (≤ ~1000x420 px at 90 dpi) and never plot more than a few thousand artists, whatever the run
size: CDFs use 400 quantiles per level, histograms are binned in numpy over all gaps, the timeline shows at most
`TIMELINE_MAX` requests (a uniform random sample, sorted by start).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullLocator

from analysis.observations import fmt_target
from analysis.summary import RunSummary

DPI = 90
TIMELINE_MAX = 300
TIMELINE_PER_LEVEL = 40
CDF_POINTS = 400
ITL_CLIP_PERCENTILE = 99.5
"""ITL histograms cut the long tail at this percentile of all pooled gaps (the tail count is written on the plot)."""

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)


def to_data_uri(fig: Figure) -> str:
    """Render and close `fig`; return `data:image/png;base64,...`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(value: float) -> str:
    return f"{value:g}"


CURVES: tuple[tuple[str, str], ...] = (("ttft", "TTFT"), ("itl", "ITL (pooled)"), ("e2e", "E2E"))


def _yerr(t: pd.DataFrame, column: str) -> np.ndarray | None:
    """Asymmetric error bars [[below], [above]] from `column`'s 95% interval (`<column>_lo/_hi`), None without."""
    if f"{column}_lo" not in t or f"{column}_hi" not in t:
        return None
    v = t[column].to_numpy(dtype=float)
    lo, hi = t[f"{column}_lo"].to_numpy(dtype=float), t[f"{column}_hi"].to_numpy(dtype=float)
    below, above = np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)
    return np.vstack([np.nan_to_num(below), np.nan_to_num(above)])


def _level_ticks(ax: Any, x: np.ndarray) -> None:
    """Ticks at the tested levels only (1, 4, 16 — not 2⁰…2⁴), on a log-2 axis when they span 8× or more."""
    x = np.unique(x[np.isfinite(x) & (x > 0)])
    if len(x) > 1 and x.max() / x.min() >= 8:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(x, [_short(v) for v in x])


def _no_data(ax: Any, text: str) -> None:
    """A panel with nothing to show becomes one line of text."""
    ax.clear()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, transform=ax.transAxes)


def latency_vs_throughput(summaries: Sequence[RunSummary]) -> str:
    """TTFT, ITL and E2E p50 (solid) and p99 (dashed), ms, against output tok/s; one point per level labelled with its
    target; the knee circled. Several runs: one hue per run."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    palette = sns.color_palette("tab10", max(len(summaries), 1))
    for k, s in enumerate(summaries):
        t = s.table[s.table["n_measured"] > 0]
        x = t["output_tok_per_s"].to_numpy(dtype=float)
        color = palette[k % len(palette)]
        label = s.run.label if len(summaries) > 1 else None
        for ax, (metric, title) in zip(axes, CURVES, strict=False):
            ax.errorbar(x, t[f"{metric}_p50"], yerr=_yerr(t, f"{metric}_p50"), xerr=_yerr(t, "output_tok_per_s"),
                        fmt="o-", color=color, capsize=2, label=(f"{label} p50" if label else "p50"))  # fmt: skip
            ax.plot(x, t[f"{metric}_p99"], "s--", color=color, alpha=0.6, label=(f"{label} p99" if label else "p99"))
            for xi, yi, tg in zip(x, t[f"{metric}_p50"], t["target"], strict=False):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(_short(tg), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
            knee = s.headline.knee_level
            if knee is not None and (t["level"] == knee).any():
                r = t[t["level"] == knee].iloc[0]
                ax.plot([r["output_tok_per_s"]], [r[f"{metric}_p50"]], "o", ms=14, mfc="none", mec="red", mew=2)
            ax.set_title(f"{title} vs throughput")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel("output tokens/s")
            ax.set_ylabel("ms")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Latency vs throughput (one point per level, labelled with its target; bars = 95% intervals; "
                 "red circle = knee)")  # fmt: skip
    return to_data_uri(fig)


def vs_load(s: RunSummary) -> str:
    """Output tok/s and req/s, and p50 TTFT/ITL/E2E, against the level target (users or req/s)."""
    t = s.table[s.table["n_measured"] > 0]
    x = t["target"].to_numpy(dtype=float)
    xlabel = "target arrival rate (req/s)" if s.run.open_loop else "concurrent users"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8))
    a1.errorbar(x, t["output_tok_per_s"], yerr=_yerr(t, "output_tok_per_s"), fmt="o-", capsize=2, label="output tok/s")
    a1.set_ylabel("output tokens/s")
    a1.set_xlabel(xlabel)
    a1b = a1.twinx()
    a1b.plot(x, t["req_per_s"], "s--", color="tab:orange", label="req/s")
    a1b.plot(x, t["goodput_req_per_s"], "^:", color="tab:green", label="goodput req/s")
    a1b.set_ylabel("requests/s")
    a1b.grid(False)
    handles, labels = a1.get_legend_handles_labels()
    more, more_labels = a1b.get_legend_handles_labels()
    a1.legend(handles + more, labels + more_labels, fontsize=7, loc="upper left")
    a1.set_title("Throughput vs load")
    for metric, title in CURVES:
        a2.errorbar(x, t[f"{metric}_p50"], yerr=_yerr(t, f"{metric}_p50"), fmt="o-", capsize=2, label=f"{title} p50")
    a2.set_yscale("log")
    a2.set_xlabel(xlabel)
    a2.set_ylabel("ms (log)")
    a2.set_title("Latency p50 vs load (bars: 95% intervals)")
    a2.legend(fontsize=7)
    for ax in (a1, a2):
        _level_ticks(ax, x)
    fig.tight_layout()
    return to_data_uri(fig)


def _level_colors(n: int) -> list[tuple[float, float, float]]:
    return list(sns.color_palette("viridis", max(n, 1)))


def ttft_cdf(s: RunSummary) -> str:
    """Empirical CDF of TTFT per level (CDF_POINTS quantiles each)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    items = [(lv, st) for lv, st in s.per_level.items() if st.ttft_ms.size]
    colors = _level_colors(len(items))
    q = np.linspace(0, 1, CDF_POINTS)
    targets = dict(zip(s.table["level"], s.table["target"], strict=False))
    for (lv, st), c in zip(items, colors, strict=False):
        vals = st.ttft_ms[np.isfinite(st.ttft_ms)]
        if vals.size:
            ax.plot(np.quantile(vals, q), q, color=c, label=fmt_target(targets[lv], s.run.open_loop))
    ax.set_xlabel("TTFT (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT CDF per level")
    if items:
        ax.legend(fontsize=7)
    return to_data_uri(fig)


def itl_histogram(s: RunSummary) -> str:
    """Histogram (density) of pooled ITL gaps per level, clipped at the ITL_CLIP_PERCENTILE of all gaps."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    items = [(lv, st.gaps_ms) for lv, st in s.per_level.items() if st.gaps_ms.size]
    targets = dict(zip(s.table["level"], s.table["target"], strict=False))
    if items:
        # the clip point: the largest per-level percentile, so no level loses more than 0.5 % of its gaps
        hi = max(float(np.percentile(g, ITL_CLIP_PERCENTILE)) for _, g in items)
        lo = min(float(g.min()) for _, g in items)
        hi = hi if hi > lo else lo + 1.0
        edges = np.linspace(max(lo, 0.0), hi, 81)
        tail = 0
        for (lv, g), c in zip(items, _level_colors(len(items)), strict=False):
            counts, _ = np.histogram(g, bins=edges)
            tail += int((g > hi).sum())
            dens = counts / max(g.size, 1) / np.diff(edges)
            ax.stairs(dens, edges, color=c, label=fmt_target(targets[lv], s.run.open_loop), linewidth=1.4)
        ax.legend(fontsize=7)
        ax.set_title(f"ITL gaps per level (clipped at {hi:.1f} ms; {tail} longer gaps not shown)")
    else:
        ax.set_title("ITL gaps per level (no token data)")
    ax.set_xlabel("gap between token events (ms)")
    ax.set_ylabel("density")
    return to_data_uri(fig)


def _bars(ax, sub: pd.DataFrame, t0: float, legend: bool) -> None:
    start = sub["t_start_s"].to_numpy() - t0
    ttft = np.nan_to_num(sub["ttft_ms"].to_numpy() / 1000.0)
    dur = np.nan_to_num(sub["end_s"].to_numpy() - sub["t_start_s"].to_numpy())
    ok = sub["ok"].to_numpy()
    y = np.arange(len(sub))
    first = np.minimum(ttft, dur)
    ax.barh(y[ok], first[ok], left=start[ok], height=0.8, color="tab:orange", label="send → first token")
    ax.barh(
        y[ok], np.maximum(dur - first, 0)[ok], left=(start + first)[ok], height=0.8, color="tab:blue", label="decode"
    )
    if (~ok).any():
        ax.barh(y[~ok], np.maximum(dur[~ok], 0.01), left=start[~ok], height=0.8, color="tab:red", label="failed")
    ax.set_yticks([])
    if legend:
        ax.legend(fontsize=7, loc="lower right")


def timeline(s: RunSummary) -> str:
    """Each request a horizontal bar: send → first token (waiting + prefill, orange), first token → end (decode,
    blue); failed requests red. A run of ≤ TIMELINE_MAX requests is shown whole; otherwise one panel per level (at
    most 9, evenly spread) with the TIMELINE_PER_LEVEL consecutive requests sent at the middle of the level's
    measurement window, so overlap (batching) stays visible."""
    req = s.run.requests.sort_values("t_start_s", kind="stable")
    n = len(req)
    t0 = float(s.run.levels["start_s"].min()) if len(s.run.levels) else float(req["t_start_s"].min())
    if n <= TIMELINE_MAX:
        fig, ax = plt.subplots(figsize=(12, 4.2))
        _bars(ax, req, t0, legend=True)
        for r in s.run.levels.itertuples(index=False):
            ax.axvline(r.start_s - t0, color="grey", lw=0.8, ls=":")
            ax.text(r.start_s - t0, n, f" {fmt_target(r.target, s.run.open_loop)}", fontsize=7, va="bottom")
        ax.set_xlabel("seconds since the first level started")
        ax.set_ylabel("request (by send time)")
        ax.set_title(f"Request timeline (all {n} requests)")
        return to_data_uri(fig)
    levels = s.run.levels
    if len(levels) > 9:
        levels = levels.iloc[np.unique(np.linspace(0, len(levels) - 1, 9).round().astype(int))]
    cols = min(3, len(levels))
    rows = -(-len(levels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for k, (ax, r) in enumerate(zip(axes.flat, levels.itertuples(index=False), strict=False)):
        mid = (r.start_s + s.run.warmup_s + r.end_s - s.run.cooldown_s) / 2
        sub = req[req["level"].to_numpy() == r.level]
        pos = int(np.searchsorted(sub["t_start_s"].to_numpy(), mid))
        lo = max(0, min(pos - TIMELINE_PER_LEVEL // 2, len(sub) - TIMELINE_PER_LEVEL))
        part = sub.iloc[lo : lo + TIMELINE_PER_LEVEL]
        if len(part):
            _bars(ax, part, float(part["t_start_s"].min()), legend=k == 0)
        ax.set_title(f"{fmt_target(r.target, s.run.open_loop)}: {len(part)} consecutive requests", fontsize=8)
        ax.set_xlabel("s since the first shown request")
    for ax in list(axes.flat)[len(levels) :]:
        ax.axis("off")
    fig.suptitle(f"Request timeline (mid-level samples of {n:,} requests)")
    fig.tight_layout()
    return to_data_uri(fig)


def errors_by_level(s: RunSummary) -> str | None:
    """Stacked bars of failed requests per level and error kind; None when nothing failed."""
    e = s.errors
    if e.empty:
        return None
    pivot = e.pivot_table(index="target", columns="error_kind", values="count", aggfunc="sum", fill_value=0)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    bottom = np.zeros(len(pivot))
    labels = [_short(v) for v in pivot.index]
    for kind, c in zip(pivot.columns, sns.color_palette("Set2", len(pivot.columns)), strict=False):
        vals = pivot[kind].to_numpy(dtype=float)
        ax.bar(labels, vals, bottom=bottom, label=str(kind), color=c)
        bottom += vals
    ax.set_xlabel("level target (req/s)" if s.run.open_loop else "level target (users)")
    ax.set_ylabel("failed requests")
    ax.set_title("Errors by kind and level")
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def run_figures(s: RunSummary) -> list[tuple[str, str]]:
    """(title, data URI) of every figure of a single-run report, in order."""
    figs = [
        ("Latency vs throughput", latency_vs_throughput([s])),
        ("Throughput and latency vs load", vs_load(s)),
        ("TTFT distribution", ttft_cdf(s)),
        ("ITL distribution", itl_histogram(s)),
        ("Request timeline: orange = send → first token, blue = decode, red = failed", timeline(s)),
    ]
    rag = retrieval_vs_generation(s)
    if rag:
        figs.append(("Retrieval vs generation (RAG) and the prompt lengths retrieval produced", rag))
    err = errors_by_level(s)
    if err:
        figs.append(("Errors", err))
    return figs


def retrieval_vs_generation(s: RunSummary) -> str | None:
    """RAG runs: retrieval, TTFT and E2E side by side per level (box plots, ms), and the prompt-token histogram."""
    req = s.run.requests
    ok = req[(req["ok"]) & req["retrieval_ms"].notna()]
    if ok.empty:
        return None
    long = pd.concat(
        [pd.DataFrame({"level": ok["level_target"], "phase": name, "ms": ok[col]})
         for name, col in (("retrieval", "retrieval_ms"), ("TTFT", "ttft_ms"), ("E2E", "e2e_ms"))]
    )  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    sns.boxplot(data=long, x="level", y="ms", hue="phase", ax=left, showfliers=False)
    left.set_xlabel(f"load level ({'req/s' if s.run.open_loop else 'users'})")
    left.set_ylabel("ms")
    left.set_yscale("log")
    sns.histplot(ok["prompt_tokens"][ok["prompt_tokens"] >= 0], bins=30, ax=right, color="#4c72b0")
    right.set_xlabel("prompt tokens (server usage)")
    right.set_ylabel("requests")
    fig.tight_layout()
    return to_data_uri(fig)


# ---------------------------------------------------------------------------------------------- server metrics
SCATTER_MAX = 3000
"""Client points per scatter panel at most (a uniform random sample beyond)."""


def _level_lines(axes, s: RunSummary, t0: float) -> None:
    for ax in axes:
        if not ax.axison:  # a panel replaced by its line of text
            continue
        for r in s.run.levels.itertuples(index=False):
            ax.axvline(r.start_s - t0, color="grey", lw=0.7, ls=":")


def _client_points(s: RunSummary, column: str) -> tuple[np.ndarray, np.ndarray]:
    req = s.run.requests
    ok = req["ok"].to_numpy() & np.isfinite(req[column].to_numpy(dtype=float))
    x, y = req["t_start_s"].to_numpy()[ok], req[column].to_numpy(dtype=float)[ok]
    if x.size > SCATTER_MAX:
        keep = np.sort(np.random.default_rng(0).choice(x.size, SCATTER_MAX, replace=False))
        x, y = x[keep], y[keep]
    return x, y


def server_panels(s: RunSummary) -> str | None:
    """Time-aligned panels, one shared x axis (s since the first level started): offered load (level target, step)
    and client requests in flight; server running and waiting requests; KV-cache usage (%); preemptions per sample
    window (bars) and cumulative (line); prefix-cache hit rate per sample window (Δhits/Δqueries); client TTFT and
    per-request mean ITL (dots, by send time) with the server's per-window means (Δsum/Δcount). None without
    server metrics."""
    srv = s.server
    if srv is None or not srv.available:
        return None
    f = srv.series.frame
    levels = s.run.levels
    t0 = float(levels["start_s"].min()) if len(levels) else float(f["t_s"].min())
    t = f["t_s"].to_numpy(dtype=float) - t0
    empty_preempt = not srv.series.has("d_preemptions") or not f["d_preemptions"].fillna(0).any()
    empty_prefix = not srv.series.has("prefix_hit_rate") or not f["prefix_hit_rate"].fillna(0).any()
    heights = [1, 1, 1, 0.18 if empty_preempt else 1, 0.18 if empty_prefix else 1, 1, 1]  # a text line, not a panel
    fig, axes = plt.subplots(7, 1, figsize=(12, 2.15 * sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    ax = axes[0]
    if len(levels):
        xs = np.append(levels["start_s"].to_numpy() - t0, float(levels["end_s"].max()) - t0)
        ys = np.append(levels["target"].to_numpy(dtype=float), levels["target"].to_numpy(dtype=float)[-1])
        ax.step(xs, ys, where="post", color="black", label="level target")
    req = s.run.requests
    edges = np.linspace(min(t.min(), 0.0), t.max(), max(int(t.max() - min(t.min(), 0.0)) * 4, 2))
    starts, ends = np.sort(req["t_start_s"].to_numpy() - t0), np.sort(req["end_s"].to_numpy() - t0)
    inflight = np.searchsorted(starts, edges, side="right") - np.searchsorted(ends, edges, side="right")
    ax.plot(edges, inflight, color="tab:purple", lw=1, label="client requests in flight")
    ax.set_ylabel("req/s" if s.run.open_loop else "users / requests")
    ax.set_title("Offered load")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    for col, color in (("running", "tab:blue"), ("waiting", "tab:red")):
        if srv.series.has(col):
            ax.plot(t, f[col], color=color, lw=1.2, label=col)
    ax.set_ylabel("requests")
    ax.set_title("Server: running and waiting requests")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    if srv.series.has("kv_cache_usage"):
        ax.plot(t, f["kv_cache_usage"] * 100.0, color="tab:green", lw=1.2)
        ax.set_ylim(0, max(5.0, float(f["kv_cache_usage"].max()) * 110.0))
    ax.set_ylabel("%")
    cap = srv.headline.kv_capacity_tokens
    ax.set_title(f"Server: KV-cache usage{f' (capacity {cap:,} tokens)' if cap else ''}")
    ax = axes[3]
    if empty_preempt:
        _no_data(ax, "Server: no preemption in this run.")
    else:
        width = srv.headline.interval_s if np.isfinite(srv.headline.interval_s) else 0.5
        ax.bar(t, f["d_preemptions"], width=width, color="tab:orange", label="per sample window")
        axb = ax.twinx()
        axb.plot(t, np.cumsum(f["d_preemptions"].to_numpy()), color="black", lw=1, label="cumulative")
        axb.set_ylabel("cumulative")
        axb.grid(False)
        ax.set_ylabel("preemptions")
        ax.set_title("Server: preemptions")
    ax = axes[4]
    if empty_prefix:
        what = "no prefix-cache hit" if srv.series.has("prefix_hit_rate") else "no prefix-cache counters"
        _no_data(ax, f"Server: {what} in this run.")
    else:
        ax.plot(t, f["prefix_hit_rate"] * 100.0, ".-", color="tab:cyan", lw=0.8, ms=3)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("%")
        ax.set_title("Server: prefix-cache hit rate per sample window (Δhits / Δqueries)")
    for ax, column, hist, title in (
        (axes[5], "ttft_ms", "ttft", "TTFT"),
        (axes[6], "itl_mean_ms", "itl", "ITL (client: per-request mean)"),
    ):
        x, y = _client_points(s, column)
        ax.scatter(x - t0, y, s=5, alpha=0.5, color="tab:blue", label="client, by send time")
        if srv.series.has(f"{hist}_window_ms"):
            ax.plot(t, f[f"{hist}_window_ms"], ".", color="tab:red", ms=4, label="server mean per sample window")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("seconds since the first level started")
    _level_lines(axes, s, t0)
    fig.tight_layout()
    return to_data_uri(fig)


def server_compare_panels(summaries: Sequence[RunSummary]) -> str | None:
    """Several runs on one time axis (s since each run's first level): running, waiting, KV usage (%) and
    cumulative preemptions; one hue per run. None when no run has server metrics."""
    with_metrics = [s for s in summaries if s.server is not None and s.server.available]
    if not with_metrics:
        return None
    fig, axes = plt.subplots(4, 1, figsize=(12, 9), sharex=True)
    palette = sns.color_palette("tab10", max(len(summaries), 1))
    for k, s in enumerate(summaries):
        if s.server is None or not s.server.available:
            continue
        f = s.server.series.frame
        t0 = float(s.run.levels["start_s"].min()) if len(s.run.levels) else float(f["t_s"].min())
        t = f["t_s"].to_numpy(dtype=float) - t0
        color, label = palette[k % len(palette)], f"{k + 1}: {s.run.label}"
        for ax, col, scale in ((axes[0], "running", 1.0), (axes[1], "waiting", 1.0), (axes[2], "kv_cache_usage", 100)):
            if s.server.series.has(col):
                ax.plot(t, f[col] * scale, color=color, lw=1.2, label=label)
        if s.server.series.has("d_preemptions"):
            axes[3].plot(t, np.cumsum(f["d_preemptions"].to_numpy()), color=color, lw=1.2, label=label)
    for ax, title, unit in zip(
        axes,
        ("Running requests", "Waiting requests", "KV-cache usage", "Preemptions (cumulative)"),
        ("requests", "requests", "%", "preemptions"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_ylabel(unit)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("seconds since each run's first level started")
    fig.tight_layout()
    return to_data_uri(fig)
