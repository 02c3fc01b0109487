"""The lab's index page (`vlab lab`): one section per experiment with its headline table, what it shows, and links
to every run's report and the experiment's comparison; `results.md` holds the same tables in Markdown.

Tables per experiment, from the runs' summaries (`analysis.pipeline.analyze`); times in ms, [lo–hi] = 95% intervals:

- load: per level TTFT p50, ITL p50, E2E p50, output tok/s, SLO fraction; the decode floor ratio (ITL p50 / the
  bandwidth floor of a decode step at that batch, `analysis.gpu`) where the physical limit is known; J per output
  token (the GPU's energy over the level's window / the output tokens received in it) where NVML gave energy.
- prefill: per prompt length (the requests' `prompt_tokens_requested`): TTFT p50 and prefill tok/s = length / TTFT
  p50, and TTFT p50 / the compute floor 2 · parameters · length / peak FLOP/s.
- decode: per batch ITL p50 [CI], output tok/s, the decode floor and ITL p50 / floor.
- prefix, kv, ladder: per run and level TTFT p50, ITL p50, E2E p50, output tok/s and the server's queue, KV peak,
  preemptions and prefix-cache hit rate; kv's identical-prompts test: each request's E2E and the wall time from the
  first send to the last token.
- crosscheck: per concurrency the suite's mean first chunk (vllm bench's TTFT), mean TPOT, mean ITL and output
  tok/s against `vllm bench serve`'s, with ratios, and the server's own generation rate.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from analysis.report import fmt_time, template_env
from analysis.summary import RunSummary
from vlab.core.hardware import card_for
from vlab.core.physical_limit import prefill_floor, ratio
from vlab.core.server_facts import read_server_facts
from vlab.core.stats import quantile_ci

INDEX_HTML = "index.html"
RESULTS_MD = "results.md"
"""The index's tables as Markdown, for docs (the same numbers as index.html)."""


def _level_rows(s: RunSummary) -> list[dict[str, Any]]:
    limit = {int(r["level"]): r for r in (s.gpu.get("limit") or {}).get("rows", [])} if s.gpu else {}
    srv = {}
    if s.server is not None and s.server.available:
        srv = {int(r["level"]): r for r in s.server.table.to_dict(orient="records")}
    energy = {int(r["level"]): r for r in (s.gpu.get("energy_rows") or [])} if s.gpu else {}
    rows = []
    for r in s.table.to_dict(orient="records"):
        lv = int(r["level"])
        lim, sv, en = limit.get(lv, {}), srv.get(lv, {}), energy.get(lv, {})
        rows.append({
            **{k: r.get(k) for k in (
                "level", "target", "n_measured", "ttft_p50", "ttft_p50_lo", "ttft_p50_hi", "itl_p50", "itl_p50_lo",
                "itl_p50_hi", "e2e_p50", "output_tok_per_s", "output_tok_per_s_lo", "output_tok_per_s_hi",
                "slo_fraction", "first_chunk_mean", "tpot_mean", "itl_mean", "n_failed", "n_cut_off", "client_flag",
                "client_flagged_samples", "client_samples",
            )},
            "floor_ms": lim.get("floor_ms"), "floor_ratio": lim.get("ratio"), "verdict": lim.get("verdict"),
            "max_waiting": sv.get("max_waiting"), "peak_kv_usage": sv.get("peak_kv_usage"),
            "preemptions": sv.get("preemptions"), "prefix_hit_rate": sv.get("prefix_hit_rate"),
            "server_gen_tok_per_s": sv.get("server_gen_tok_per_s"),
            "j_per_token": _per_token(en.get("energy_j"), en.get("output_tokens")),
        })  # fmt: skip
    return rows


def _per_token(energy_j: Any, tokens: Any) -> float:
    """J per output token over a level's window (`analysis.gpu.energy_table`), NaN without GPU energy."""
    try:
        e, n = float(energy_j), float(tokens)
    except (TypeError, ValueError):
        return math.nan
    return e / n if n > 0 and math.isfinite(e) else math.nan


def prefill_rows(s: RunSummary) -> list[dict[str, Any]]:
    """TTFT p50 per requested prompt length (see the module docstring)."""
    req = s.run.requests
    ok = req[req["ok"]]
    facts, _ = read_server_facts(s.run.path)
    names = [d.get("name") for d in (s.gpu.get("devices") or [])] if s.gpu else []
    card = card_for(str(names[0])) if names and names[0] else None
    shape = facts.model_shape if facts is not None else None
    rows = []
    for length, group in ok.groupby("prompt_tokens_requested"):
        ttft = group["ttft_ms"].to_numpy(dtype=float)
        ci = quantile_ci(ttft, 0.5)
        rec: dict[str, Any] = {
            "prompt_tokens": int(length), "n": len(ttft), "ttft_p50": ci.value, "ttft_p50_lo": ci.lo,
            "ttft_p50_hi": ci.hi, "prefill_tok_per_s": int(length) / (ci.value / 1000.0) if ci.value > 0 else math.nan,
            "floor_ms": math.nan, "floor_ratio": math.nan,
        }  # fmt: skip
        if shape is not None and card is not None:
            fl = prefill_floor(shape, card, float(length), facts.dtype if facts and facts.dtype != "auto" else None)
            rec["floor_ms"] = fl.floor_s * 1000.0
            rec["floor_ratio"] = ratio(ci.value, rec["floor_ms"])
        rows.append(rec)
    return rows


def identical_rows(s: RunSummary) -> dict[str, Any]:
    """The identical-prompts test: the first wave only, one request per user, all sent at once (a level lasts at
    least its shortest time, so its users may send a second wave, `n_later`): each request's E2E (ms) and the wall
    time first send → last token (s)."""
    req = s.run.requests
    users = int(s.run.levels["target"].iloc[0]) if len(s.run.levels) else 0
    ok = req[req["ok"]].sort_values("t_start_s")
    later = max(len(ok) - users, 0)
    ok = ok.head(users)
    if ok.empty:
        return {"n": 0, "n_later": later}
    start = ok["t_start_s"].to_numpy()
    end = ok["end_s"].to_numpy()
    return {
        "n": len(ok),
        "e2e_ms": [float(v) for v in ok["e2e_ms"]],
        "e2e_mean_ms": float(ok["e2e_ms"].mean()),
        "wall_s": float(np.max(end) - np.min(start)),
        "ttft_ms": [float(v) for v in ok["ttft_ms"]],
        "n_later": later,
    }


def crosscheck_rows(manifest: dict[str, Any], summaries: dict[str, RunSummary]) -> list[dict[str, Any]]:
    """Suite against vllm bench per concurrency (the module docstring's definitions)."""
    bench = {e["bench"]["concurrency"]: e for e in manifest["runs"] if e["kind"] == "vllm_bench" and e.get("result")}
    rows = []
    for entry in manifest["runs"]:
        if entry["experiment"] != "crosscheck" or entry["kind"] != "suite" or entry["run_dir"] not in summaries:
            continue
        s = summaries[entry["run_dir"]]
        level = _level_rows(s)[0]
        c = int(level["target"])
        vb = (bench.get(c) or {}).get("result") or {}
        pairs = {
            "ttft": (level["first_chunk_mean"], vb.get("mean_ttft_ms")),
            "tpot": (level["tpot_mean"], vb.get("mean_tpot_ms")),
            "itl": (level["itl_mean"], vb.get("mean_itl_ms")),
            "tok_s": (level["output_tok_per_s"], vb.get("output_throughput")),
        }
        rec: dict[str, Any] = {"concurrency": c, "n": level["n_measured"], "client_flag": level["client_flag"],
                               "server_gen_tok_per_s": level["server_gen_tok_per_s"]}  # fmt: skip
        for key, (suite, ref) in pairs.items():
            rec[f"suite_{key}"], rec[f"bench_{key}"] = suite, ref
            rec[f"ratio_{key}"] = suite / ref if suite is not None and ref else math.nan
        gen = level["server_gen_tok_per_s"]
        rec["ratio_server"] = level["output_tok_per_s"] / gen if gen else math.nan
        rows.append(rec)
    return sorted(rows, key=lambda r: r["concurrency"])


def write_lab_index(
    lab_dir: Path, manifest: dict[str, Any], summaries: dict[str, RunSummary], titles: dict[str, tuple[str, str]]
) -> Path:
    """Render the lab's index.html (see the module docstring); return its path."""
    sections = []
    for name, (title, question) in titles.items():
        entries = [e for e in manifest["runs"] if e["experiment"] == name]
        if not entries:
            continue
        runs = []
        for e in entries:
            s = summaries.get(e["run_dir"])
            runs.append({
                "entry": e, "summary": s, "levels": _level_rows(s) if s is not None else [],
                "report": f"{e['run_dir']}/index.html" if s is not None else None,
                "status": s.run.meta.status if s is not None else ("ok" if e.get("code") == 0 else "failed"),
                "headline": s.headline if s is not None else None,
                "limit": (s.gpu.get("limit") or {}) if s is not None and s.gpu else {},
                "prefill": prefill_rows(s) if s is not None and name == "prefill" else [],
                "identical": identical_rows(s) if s is not None and e["label"] == "identical" else None,
                "dummy": bool(s is not None and s.gpu and s.gpu.get("dummy_weights")),
            })  # fmt: skip
        compare = lab_dir / name / "compare.html"
        sections.append({
            "name": name, "title": title, "question": question, "runs": runs,
            "compare": f"{name}/compare.html" if compare.is_file() else None,
            "crosscheck": crosscheck_rows(manifest, summaries) if name == "crosscheck" else [],
        })  # fmt: skip
    env = template_env()
    context = dict(
        manifest=manifest, sections=sections, servers=manifest.get("servers") or {},
        failed=manifest.get("servers_failed") or {}, started=fmt_time(manifest.get("started_at")),
        ended=fmt_time(manifest.get("ended_at")), generated=fmt_time(time.time()),
    )  # fmt: skip
    markdown = env.overlay(autoescape=False).get_template("lab.md.j2").render(**context)
    (lab_dir / RESULTS_MD).write_text(markdown, encoding="utf-8")
    out = lab_dir / INDEX_HTML
    out.write_text(env.get_template("lab.html.j2").render(**context), encoding="utf-8")
    return out
