"""The GPU's view of a run: NVML samples (`gpu_metrics.csv`, see `vlab.telemetry.gpu`) per level, energy per token,
and the measured latencies against the physical limit of the card (`vlab.core.physical_limit`).

Per level, over its measurement window W = [window_start_s, window_end_s] (Unix s), all GPUs summed (power, energy)
or averaged (utilization, SM clock):

- utilization mean / max (%), power mean (W), memory used max (bytes), SM clock mean (MHz): samples with t in W.
- energy E (J): with the energy counter, E = e(W_end) − e(W_start), the counter interpolated linearly at the window's
  edges between the samples around them ("counter"); when the samples do not reach past both edges, the increase
  between the first and last sample inside W, scaled by |W| / (t_last − t_first) ("counter, scaled"). Without a
  counter: ∫ power dt over W by the trapezoid rule, power interpolated at the edges ("power integral").
- output tokens = output tok/s × |W| (the tokens of the requests that ended in W, as `analysis.summary` counts them);
  J/token = E / output tokens; tokens/J = output tokens / E.

Physical limit per level (needs the model's shape from `server.json` and a card of `vlab.core.hardware`):
batch B = the server's mean running requests over W (server_metrics.csv), else the level's users (closed loop);
mean context c = mean prompt tokens + half the mean output tokens (a request's KV grows from the prompt to prompt +
output during its decode); decode floor = `decode_floor(B, c)`; ratio = ITL p50 / floor. Prefill: the lowest level
(1 user when the scenario has one), TTFT p50 against `prefill_floor(mean prompt)`.

`gpu_context(run_dir, levels)` returns the variables of the `gpu.html.j2` partial; everything else is pure functions
over frames, for tests and notebooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.core.hardware import Card, card_for
from vlab.core.jsonsafe import read_json_object
from vlab.core.model_shape import ModelShape
from vlab.core.physical_limit import decode_floor, prefill_floor, ratio, verdict
from vlab.core.server_facts import ServerFacts, read_server_facts

GPU_CSV = "gpu_metrics.csv"
GPU_JSON = "gpu_metrics.json"
DUMMY_SENTENCE = (
    "This server ran with random weights (vLLM --load-format dummy): compute, memory traffic and kernels are those "
    "of the real model, so every time and rate here is real, but the generated text is meaningless; prompt and "
    "output lengths were fixed by the scenario."
)


@dataclass
class GpuSeries:
    """The samples of one run: `frame` with the columns of gpu_metrics.csv; `info` the JSON note."""

    available: bool
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def gpu_names(self) -> list[str]:
        return [str(d.get("name")) for d in self.info.get("devices") or []]

    def has_energy(self) -> bool:
        return "energy_j" in self.frame and bool(self.frame["energy_j"].notna().any())


def load_gpu_metrics(run_dir: Path | str) -> GpuSeries:
    """Read gpu_metrics.csv/json of a run folder. Never raises: missing or unusable files give `available=False`
    with a one-line reason."""
    run_dir = Path(run_dir)
    info = read_json_object(run_dir / GPU_JSON)
    csv = run_dir / GPU_CSV
    if not csv.is_file():
        reason = str(info.get("reason") or "") or "no gpu_metrics.csv in the run folder (no GPU sampler ran)"
        return GpuSeries(False, reason, info)
    try:
        text = csv.read_text(encoding="utf-8", errors="replace")
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a partial last line (killed mid-write)
        frame = pd.read_csv(StringIO(text)) if text.strip() else pd.DataFrame()
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return GpuSeries(False, f"{GPU_CSV} unreadable: {str(exc).splitlines()[0] if str(exc) else exc}", info)
    if frame.empty or "t_s" not in frame or "gpu" not in frame:
        return GpuSeries(False, f"{GPU_CSV} holds no sample", info)
    frame = frame.apply(pd.to_numeric, errors="coerce")
    frame = frame[frame["t_s"].notna()].sort_values(["gpu", "t_s"], kind="stable").reset_index(drop=True)
    return GpuSeries(True, "", info, frame)


# ---------------------------------------------------------------------------------------------------- energy
def _interp_edge(t: np.ndarray, y: np.ndarray, at: float) -> float:
    return float(np.interp(at, t, y))


def window_energy(t: np.ndarray, energy_j: np.ndarray, power_w: np.ndarray, lo: float, hi: float) -> tuple[float, str]:
    """Energy (J) one GPU used over [lo, hi] and the method (see the module doc). NaN when it cannot be told."""
    span = hi - lo
    if span <= 0 or t.size == 0:
        return math.nan, "none"
    ok = np.isfinite(energy_j)
    if ok.sum() >= 2:
        te, e = t[ok], energy_j[ok]
        if te[0] <= lo and te[-1] >= hi:
            delta = _interp_edge(te, e, hi) - _interp_edge(te, e, lo)
            return (delta if delta >= 0 else math.nan), "counter"
        inside = (te >= lo) & (te <= hi)
        if inside.sum() >= 2:
            ti, ei = te[inside], e[inside]
            delta = float(ei[-1] - ei[0])
            return (delta * span / float(ti[-1] - ti[0]) if delta >= 0 else math.nan), "counter, scaled"
    okp = np.isfinite(power_w)
    if okp.sum() >= 2:
        tp, p = t[okp], power_w[okp]
        if tp[-1] < lo or tp[0] > hi:
            return math.nan, "none"
        a, b = max(lo, float(tp[0])), min(hi, float(tp[-1]))
        grid = np.concatenate(([a], tp[(tp > a) & (tp < b)], [b]))
        values = np.interp(grid, tp, p)
        covered = b - a
        integral = float(np.sum((values[1:] + values[:-1]) / 2.0 * np.diff(grid)))
        return (integral * span / covered if covered > 0 else math.nan), "power integral"
    return math.nan, "none"


def _col(levels: pd.DataFrame, name: str, default: float = math.nan) -> np.ndarray:
    return levels[name].to_numpy(dtype=float) if name in levels else np.full(len(levels), default)


def output_tokens(levels: pd.DataFrame) -> np.ndarray:
    """Output tokens ending in each level's window: `output_tokens` if given, else output tok/s × window s."""
    if "output_tokens" in levels:
        return levels["output_tokens"].to_numpy(dtype=float)
    window = _col(levels, "window_end_s") - _col(levels, "window_start_s")
    window = np.where(np.isfinite(_col(levels, "window_s")), _col(levels, "window_s"), window)
    return _col(levels, "output_tok_per_s") * window


def energy_table(series: GpuSeries, levels: pd.DataFrame) -> pd.DataFrame:
    """One row per level: level, target, samples, util_mean_pct, util_max_pct, power_mean_w, mem_used_max_bytes,
    sm_clock_mean_mhz, energy_j, energy_method, output_tokens, j_per_token, tokens_per_j."""
    f = series.frame
    tokens = output_tokens(levels)
    rows: list[dict[str, Any]] = []
    for k, r in enumerate(levels.itertuples(index=False)):
        lo, hi = float(r.window_start_s), float(r.window_end_s)
        rec: dict[str, Any] = {"level": int(r.level), "target": float(r.target), "window_s": hi - lo}
        inside = (f["t_s"] >= lo) & (f["t_s"] <= hi) if not f.empty else pd.Series(dtype=bool)
        sel = f[inside] if not f.empty else f
        rec["samples"] = int(sel.groupby("gpu")["t_s"].count().min()) if not sel.empty else 0

        def stat(col: str, how: str, frame: pd.DataFrame = sel) -> float:
            if frame.empty or col not in frame or not frame[col].notna().any():
                return math.nan
            return float(getattr(frame[col], how)())

        rec["util_mean_pct"] = stat("util_pct", "mean")
        rec["util_max_pct"] = stat("util_pct", "max")
        rec["power_mean_w"] = _power_mean(sel)
        rec["mem_used_max_bytes"] = stat("mem_used_bytes", "max")
        rec["sm_clock_mean_mhz"] = stat("sm_clock_mhz", "mean")
        energies, methods = [], set()
        for _, g in f.groupby("gpu") if not f.empty else []:
            e, how = window_energy(
                g["t_s"].to_numpy(dtype=float),
                g["energy_j"].to_numpy(dtype=float) if "energy_j" in g else np.full(len(g), np.nan),
                g["power_w"].to_numpy(dtype=float) if "power_w" in g else np.full(len(g), np.nan),
                lo,
                hi,
            )
            energies.append(e)
            methods.add(how)
        energy = float(np.sum(energies)) if energies and all(math.isfinite(e) for e in energies) else math.nan
        rec["energy_j"] = energy
        rec["energy_method"] = ", ".join(sorted(methods)) if methods else "none"
        rec["output_tokens"] = float(tokens[k])
        ok = math.isfinite(energy) and energy > 0 and math.isfinite(tokens[k]) and tokens[k] > 0
        rec["j_per_token"] = energy / tokens[k] if ok else math.nan
        rec["tokens_per_j"] = tokens[k] / energy if ok else math.nan
        rows.append(rec)
    return pd.DataFrame(rows)


def _power_mean(sel: pd.DataFrame) -> float:
    """Σ over GPUs of each GPU's mean power over the window (W): the mean of the summed power when every GPU was read
    at every sample, as the sampler does."""
    if sel.empty or "power_w" not in sel or not sel["power_w"].notna().any():
        return math.nan
    return float(sel.groupby("gpu")["power_w"].mean().sum())


# -------------------------------------------------------------------------------------------- physical limit
def mean_running(run_dir: Path | str, levels: pd.DataFrame) -> np.ndarray:
    """The server's mean `running` gauge over each level's window (server_metrics.csv), NaN where unknown."""
    from analysis.server_metrics import load_server_metrics

    series = load_server_metrics(run_dir)
    out = np.full(len(levels), np.nan)
    if not series.available or not series.has("running"):
        return out
    t = series.frame["t_s"].to_numpy(dtype=float)
    running = series.frame["running"].to_numpy(dtype=float)
    for k, r in enumerate(levels.itertuples(index=False)):
        sel = (t >= float(r.window_start_s)) & (t <= float(r.window_end_s)) & np.isfinite(running)
        if sel.any():
            out[k] = float(running[sel].mean())
    return out


def limit_table(
    levels: pd.DataFrame,
    shape: ModelShape,
    card: Card,
    dtype: str | None = "auto",
    running: np.ndarray | None = None,
    open_loop: bool = False,
) -> pd.DataFrame:
    """Per level: batch (and where it came from), prompt, output and mean context tokens, the decode floor (ms, and
    which resource sets it), ITL p50 (ms), ratio and its verdict."""
    prompt = _col(levels, "prompt_tokens_mean")
    done = _col(levels, "n_completed")
    tokens = output_tokens(levels)
    out_mean = np.where(done > 0, tokens / np.where(done > 0, done, 1), np.nan)
    itl = _col(levels, "itl_p50")
    rows = []
    for k, r in enumerate(levels.itertuples(index=False)):
        run_k = running[k] if running is not None else math.nan
        if math.isfinite(run_k) and run_k > 0:
            batch, source = run_k, "server: mean running"
        elif not open_loop:
            batch, source = float(r.target), "users (no server metrics)"
        else:
            batch, source = math.nan, "unknown (open loop, no server metrics)"
        context = prompt[k] + out_mean[k] / 2.0
        rec: dict[str, Any] = {
            "level": int(r.level),
            "target": float(r.target),
            "batch": batch,
            "batch_source": source,
            "prompt_tokens": prompt[k],
            "output_tokens": out_mean[k],
            "mean_context": context,
            "floor_ms": math.nan,
            "memory_ms": math.nan,
            "compute_ms": math.nan,
            "bound": "",
            "itl_p50_ms": itl[k],
        }
        if math.isfinite(batch) and batch > 0 and math.isfinite(context):
            fl = decode_floor(shape, card, batch, context, dtype)
            rec["floor_ms"], rec["bound"] = fl.floor_s * 1000.0, fl.bound
            rec["memory_ms"], rec["compute_ms"] = fl.memory_s * 1000.0, fl.compute_s * 1000.0
        rec["ratio"] = ratio(itl[k], rec["floor_ms"])
        rec["verdict"] = verdict(rec["ratio"])
        rows.append(rec)
    return pd.DataFrame(rows)


def prefill_row(levels: pd.DataFrame, shape: ModelShape, card: Card, dtype: str | None = "auto") -> dict[str, Any]:
    """TTFT p50 of the lowest level against the prefill floor of its mean prompt."""
    measured = levels[_col(levels, "ttft_p50") > 0] if "ttft_p50" in levels else levels.iloc[0:0]
    if measured.empty:
        return {"available": False, "reason": "no level with a measured TTFT"}
    r = measured.sort_values("target", kind="stable").iloc[0]
    prompt = float(r.get("prompt_tokens_mean", math.nan))
    if not (math.isfinite(prompt) and prompt > 0):
        return {"available": False, "reason": "the prompt length of the level is unknown"}
    fl = prefill_floor(shape, card, prompt, dtype)
    ttft = float(r["ttft_p50"])
    q = ratio(ttft, fl.floor_s * 1000.0)
    return {
        "available": True,
        "level": int(r["level"]),
        "target": float(r["target"]),
        "prompt_tokens": prompt,
        "floor_ms": fl.floor_s * 1000.0,
        "compute_ms": fl.compute_s * 1000.0,
        "memory_ms": fl.memory_s * 1000.0,
        "bound": fl.bound,
        "ttft_p50_ms": ttft,
        "ratio": q,
        "verdict": verdict(q, prefill=True),
        "one_user": float(r["target"]) == 1.0,
    }


# ------------------------------------------------------------------------------------------------------ figure
def gpu_figure(series: GpuSeries, levels: pd.DataFrame, run_dir: Path | str | None = None) -> str | None:
    """Utilization (%), power (W), memory used (GiB) and SM clock (MHz) per GPU over time, with the server's running
    requests (if sampled) on the same axis; dotted lines at level starts, shading over measurement windows. x: s since
    the first level started. None without samples."""
    if not series.available:
        return None
    from analysis.plots import plt, to_data_uri

    f = series.frame
    t0 = float(levels["start_s"].min()) if len(levels) else float(f["t_s"].min())
    panels = [
        ("util_pct", "GPU utilization (%, time a kernel ran)", 1.0),
        ("power_w", "Power (W)", 1.0),
        ("mem_used_bytes", "Memory used (GiB)", 1.0 / (1 << 30)),
        ("sm_clock_mhz", "SM clock (MHz)", 1.0),
    ]
    server = None
    if run_dir is not None:
        from analysis.server_metrics import load_server_metrics

        server = load_server_metrics(run_dir)
        if not (server.available and server.has("running")):
            server = None
    n = len(panels) + (1 if server is not None else 0)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.3 * n), sharex=True)
    for ax, (col, title, scale) in zip(axes, panels, strict=False):
        for gpu, g in f.groupby("gpu"):
            if col in g and g[col].notna().any():
                ax.plot(g["t_s"] - t0, g[col] * scale, lw=1.1, label=f"GPU {int(gpu)}")
        ax.set_title(title)
        peak = float(f[col].max() * scale) if col in f and f[col].notna().any() else 0.0
        if col == "mem_used_bytes" and "mem_total_bytes" in f and f["mem_total_bytes"].notna().any():
            peak = float(f["mem_total_bytes"].max() * scale)  # the card's size: a flat line stays visible
        ax.set_ylim(0, 105 if col == "util_pct" else max(peak * 1.08, 1.0))
        if f["gpu"].nunique() > 1:
            ax.legend(fontsize=7, loc="upper left")
    if server is not None:
        ax = axes[-1]
        sf = server.frame
        ax.plot(sf["t_s"] - t0, sf["running"], color="tab:blue", lw=1.1, label="running")
        if server.has("waiting"):
            ax.plot(sf["t_s"] - t0, sf["waiting"], color="tab:red", lw=1.1, label="waiting")
        ax.set_title("Server (/metrics): requests running and waiting")
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes:
        for r in levels.itertuples(index=False):
            ax.axvline(float(r.start_s) - t0, color="grey", lw=0.7, ls=":")
            if hasattr(r, "window_start_s"):
                ax.axvspan(float(r.window_start_s) - t0, float(r.window_end_s) - t0, color="grey", alpha=0.07)
    axes[-1].set_xlabel("seconds since the first level started")
    fig.tight_layout()
    return to_data_uri(fig)


# ----------------------------------------------------------------------------------------------- the template
def _limit_context(
    run_dir: Path,
    levels: pd.DataFrame,
    series: GpuSeries,
    facts: ServerFacts | None,
    facts_reason: str,
    open_loop: bool,
) -> dict[str, Any]:
    names = series.gpu_names or ([facts.gpu_name] if facts is not None and facts.gpu_name else [])
    if facts is None:
        return {"available": False, "reason": f"the model's shape is unknown: {facts_reason}"}
    if facts.model_shape is None:
        return {"available": False, "reason": "server.json has no model_shape (no config.json for the model)"}
    if not names:
        return {"available": False, "reason": "the GPU is unknown (no GPU telemetry and no gpu_name in server.json)"}
    card = card_for(names[0])
    if card is None:
        return {
            "available": False,
            "reason": f"the physical limit is unknown for the card {names[0]!r} (not in vlab/core/hardware.py)",
        }
    shape = facts.model_shape
    dtype = facts.dtype if facts.dtype != "auto" else None
    table = limit_table(levels, shape, card, dtype, mean_running(run_dir, levels), open_loop)
    return {
        "available": True,
        "reason": "",
        "card": card,
        "card_sources": card.sources(),
        "shape": shape.summary(dtype),
        "weight_bytes": shape.matmul_weight_bytes(dtype),
        "kv_bytes_per_token": shape.kv_bytes_per_token(dtype),
        "flops_per_token": shape.flops_per_token,
        "several_gpus": len(names) > 1,
        "rows": table.to_dict(orient="records"),
        "prefill": prefill_row(levels, shape, card, dtype),
    }


def gpu_context(run_dir: Path | str, levels: pd.DataFrame, open_loop: bool | None = None) -> dict[str, Any]:
    """The variables of `analysis/templates/gpu.html.j2` (pass them as `gpu`): GPU telemetry, per-level energy, the
    physical limit, and whether the weights were random. `levels` is the per-level summary table
    (`RunSummary.table`); `open_loop` defaults to whether it has a `target_rate` column. Never raises for missing or
    bad files: each part says in one line why it is absent."""
    run_dir = Path(run_dir)
    if open_loop is None:
        open_loop = "target_rate" in levels
    series = load_gpu_metrics(run_dir)
    facts, facts_reason = read_server_facts(run_dir)
    ctx: dict[str, Any] = {
        "available": series.available,
        "reason": series.reason,
        "devices": series.info.get("devices") or [],
        "driver": series.info.get("driver"),
        "cost": series.info.get("cost") or {},
        "interval_s": series.info.get("interval_s"),
        "dummy_weights": bool(facts is not None and facts.dummy_weights),
        "dummy_sentence": DUMMY_SENTENCE,
        "facts": facts,
        "figure": None,
        "energy_rows": [],
        "energy_methods": [],
    }
    if series.available:
        energy = energy_table(series, levels)
        ctx["energy_rows"] = energy.to_dict(orient="records")
        ctx["energy_methods"] = sorted(set(energy["energy_method"])) if len(energy) else []
        ctx["figure"] = gpu_figure(series, levels, run_dir)
        ctx["shared_gpu"] = any((d.get("compute_processes") or 0) > 1 for d in ctx["devices"])
    ctx["limit"] = _limit_context(run_dir, levels, series, facts, facts_reason, bool(open_loop))
    return ctx
