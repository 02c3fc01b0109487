"""The three tables, as Markdown (printed and written to `tables.md`), with the suite / best-peer ratios."""

from __future__ import annotations

import math
from collections.abc import Iterable

from bench.peers.benches import Agreement, EdgeResult
from bench.peers.metrics import Capacity, Observed
from bench.peers.tools import TOOLS


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _md(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def per_core(r: Capacity) -> float:
    """Streamed tokens per second of client CPU (tokens/s ÷ client CPU): what one whole client core streams."""
    return r.tokens_per_s / r.client_cpu if r.client_cpu and r.client_cpu > 0 else math.nan


def capacity_table(results: list[Capacity]) -> str:
    header = ["tool", "mode", "streams", "tok/s", "tok per client CPU-s", "client CPU", "µs CPU/token", "other CPU",
              "ITL err p50", "p99", "p99.9 (ms)", "TTFT err p50", "p99 (ms)", "notes"]  # fmt: skip
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.tool, r.mode, str(r.streams), f"could not run: {r.status}"] + [""] * 10)
            continue
        if TOOLS[r.tool].caps.per_event_times:
            itl = [_f(r.itl_err_p50), _f(r.itl_err_p99), _f(r.itl_err_p999)]
        elif r.mode == "bulk":
            itl = ["—", "—", "—"]
        else:
            mean = f"; mean-ITL err p99 {_f(r.mean_itl_err_p99)} ms" if not math.isnan(r.mean_itl_err_p99) else ""
            itl = ["no per-event times" + mean, "n/a", "n/a"]
        if r.mode == "bulk":
            itl = ["—", "—", "—"]
        notes = list(r.notes)
        if r.saturation_warning is not None:
            notes.append("saturation warning" if r.saturation_warning else "no saturation warning")
        rows.append([r.tool, r.mode, str(r.streams), _f(r.tokens_per_s, 0), _f(per_core(r), 0),
                     _f(r.client_cpu), _f(r.cpu_us_per_token, 1), _f(r.other_cpu), *itl,
                     *(["—", "—"] if r.mode == "bulk" else [_f(r.ttft_err_p50), _f(r.ttft_err_p99)]),
                     "; ".join(notes)])  # fmt: skip
    return _md(header, rows)


def capacity_ratios(results: list[Capacity]) -> str:
    """Per load: suite / best peer for tokens/s per core (higher is better) and ITL error p99 (lower is better)."""
    header = ["mode", "streams", "suite tok per CPU-s", "best peer", "ratio", "suite ITL err p99", "best peer",
              "ratio (suite/peer)"]  # fmt: skip
    rows = []
    keys = sorted({(r.mode, r.streams) for r in results}, key=lambda k: (k[0] != "bulk", k[0], k[1]))
    for mode, n in keys:
        group = [r for r in results if (r.mode, r.streams) == (mode, n) and r.status == "ok"]
        suite = next((r for r in group if r.tool == "suite"), None)
        peers = [r for r in group if r.tool != "suite"]
        if suite is None or not peers:
            continue
        best_tps = max(peers, key=lambda r: -1 if math.isnan(per_core(r)) else per_core(r))
        timed = [r for r in peers if not math.isnan(r.itl_err_p99)]
        best_err = min(timed, key=lambda r: r.itl_err_p99) if timed else None
        rows.append([mode, str(n), _f(per_core(suite), 0),
                     f"{best_tps.tool} {_f(per_core(best_tps), 0)}",
                     _f(per_core(suite) / per_core(best_tps)),
                     _f(suite.itl_err_p99), f"{best_err.tool} {_f(best_err.itl_err_p99)}" if best_err else "—",
                     _f(suite.itl_err_p99 / best_err.itl_err_p99) if best_err and best_err.itl_err_p99 else "—",
                     ])  # fmt: skip
    return _md(header, rows)


TOLERANCE_MS = 0.5
TOLERANCE_REL = 0.05


def _judge(value: float, truth: float, digits: int = 1) -> str:
    """`value` with ✓ when within max(0.5 ms, 5%) of the truth (exact for counts), else ✗."""
    if math.isnan(value) and math.isnan(truth):
        return "— ✓"
    if math.isnan(value) or math.isnan(truth):
        return f"{_f(value, digits)} ✗"
    ok = abs(value - truth) <= max(TOLERANCE_MS, TOLERANCE_REL * abs(truth))
    return f"{_f(value, digits)} {'✓' if ok else '✗'}"


def _judge_itl(value: float, truth: Observed) -> str:
    """ITL against the per-event truth; a tool whose ITL is per token (equal to the TPOT truth) is marked so."""
    verdict = _judge(value, truth.itl_ms)
    if verdict.endswith("✗") and _judge(value, truth.tpot_ms).endswith("✓"):
        return verdict + " (per token)"
    return verdict


def edge_table(results: list[EdgeResult]) -> str:
    header = ["case", "tool", "TTFT ms", "ITL ms", "TPOT ms", "tokens/request", "ok (of true)", "errors (of true)"]
    rows = []
    for case in dict.fromkeys(r.case for r in results):
        group = [r for r in results if r.case == case]
        t: Observed = group[0].truth
        rows.append([case, "**truth** (first tool's run)", _f(t.ttft_ms, 1), _f(t.itl_ms, 1), _f(t.tpot_ms, 1),
                     _f(t.output_tokens, 1), str(t.ok), str(t.errors)])  # fmt: skip
        for r in group:
            if not r.status.startswith("ok"):
                rows.append([case, r.tool, f"could not run: {r.status}", "", "", "", "", ""])
                continue
            o, t = r.reported, r.truth
            tok_ok = abs(o.output_tokens - t.output_tokens) < 0.5 if not math.isnan(o.output_tokens) else False
            both_nan = math.isnan(o.output_tokens) and math.isnan(t.output_tokens)
            tok = f"{_f(o.output_tokens, 1)} {'✓' if tok_ok or both_nan else '✗'}"
            rows.append([case, r.tool, _judge(o.ttft_ms, t.ttft_ms), _judge_itl(o.itl_ms, t),
                         _judge(o.tpot_ms, t.tpot_ms), tok, f"{o.ok} of {t.ok} {'✓' if o.ok == t.ok else '✗'}",
                         f"{o.errors} of {t.errors} {'✓' if o.errors == t.errors else '✗'}"])  # fmt: skip
    return _md(header, rows)


def agreement_table(results: list[Agreement]) -> str:
    header = ["tool", "TTFT mean", "median", "TPOT mean", "median", "ITL mean", "median", "output tok/s (own)",
              "same def: TTFT", "TPOT", "tok/s", "vs vllm bench: TTFT", "TPOT", "tok/s"]  # fmt: skip
    ref = next((r for r in results if r.tool == "vllm-bench" and r.status == "ok"), None)
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.tool, f"could not run: {r.status}"] + [""] * 13)
            continue
        g, s = r.reported, r.same_def

        def ratio(key: str, r=r) -> str:
            if ref is None or not ref.same_def.get(key) or math.isnan(ref.same_def[key]):
                return "—"
            return _f(r.same_def[key] / ref.same_def[key], 3)

        rows.append([r.tool, _f(g.get("ttft_ms"), 1), _f(g.get("ttft_median_ms"), 1), _f(g.get("tpot_ms")),
                     _f(g.get("tpot_median_ms")), _f(g.get("itl_ms")), _f(g.get("itl_median_ms")),
                     _f(g.get("output_tokens_per_s"), 1), _f(s.get("ttft_mean_ms"), 1), _f(s.get("tpot_mean_ms")),
                     _f(s.get("output_tok_s"), 1), ratio("ttft_mean_ms"), ratio("tpot_mean_ms"),
                     ratio("output_tok_s")])  # fmt: skip
    return _md(header, rows)
