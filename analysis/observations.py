"""Plain-language observations computed from a run's summary. Each rule is a small function returning sentences.

Rules (levels in order; "first"/"last" = lowest/highest level with measured requests):

1. status: the run was interrupted or is still running → the last level may be partial; a run streamed through a
   comparison client (run.json `client`, e.g. the openai SDK user) says so.
2. latency growth: TTFT p50 and pooled ITL p50 ratios last/first. TTFT ratio > 2 × ITL ratio → "prefill queueing
   dominates"; ITL ratio > 2 × TTFT ratio → "decode slows down as batches grow"; else both grow alike.
3. throughput scaling: output tok/s ratio first → knee and knee → last ("the server is saturated"); without a knee,
   first → last ("not saturated within the levels tested").
4. SLO: the highest level where ≥ 90 % of requests meet every objective, and its goodput; or that none does.
5. errors: failed requests by kind with the worst level; `cut_off` alone is called expected at the end of a run.
6. token counts: prompt mismatches, completion mismatches (early stops), multi-token events.
7. open loop: levels whose achieved arrival rate is > 5 % below target, and the share of arrivals that waited.
8. few samples: levels with fewer than 100 measured requests (p99 rests on one or two requests).
9. server metrics (`analysis.server_metrics`, when the run has them): queueing, KV-cache peak and preemptions in one
   sentence; prefix-cache hit rate; server vs client TTFT (the overhead); traffic from other clients. A run without
   them gets a one-line note.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from analysis.summary import RunSummary

MIN_SAMPLES = 100
RATE_SHORTFALL = 0.05


def fmt_target(value: float, open_loop: bool) -> str:
    """'4 users' or '2.5 req/s'."""
    text = f"{value:g}"
    return f"{text} req/s" if open_loop else f"{text} user{'s' if value != 1 else ''}"


def _ratio(a: float, b: float) -> float:
    return b / a if np.isfinite(a) and np.isfinite(b) and a > 0 else math.nan


def observe(summary: RunSummary) -> list[str]:
    """All observations that apply, most important first."""
    out: list[str] = []
    rules = (
        _status, _client_path, _client_health, _latency_growth, _throughput_scaling, _server_metrics, _slo, _errors,
        _tokens, _open_loop, _retrieval,
    )  # fmt: skip
    for rule in (*rules, _samples):
        out.extend(rule(summary))
    return out


def _measured(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["n_measured"] > 0]


def _status(s: RunSummary) -> list[str]:
    status = s.run.meta.get("status")
    notes = []
    if status in ("interrupted", "running"):
        notes.append(f"The run is marked '{status}': the last level may be partial and its numbers less reliable.")
    if s.run.dropped_partial_lines:
        notes.append(f"A partial last line was ignored in {', '.join(s.run.dropped_partial_lines)}.")
    if s.run.tokens_path is None:
        notes.append("tokens.csv is missing: pooled ITL gaps are unavailable.")
    return notes


def _latency_growth(s: RunSummary) -> list[str]:
    t = _measured(s.table)
    if len(t) < 2:
        return []
    first, last = t.iloc[0], t.iloc[-1]
    ol = s.run.open_loop
    span = f"from {fmt_target(first['target'], ol)} to {fmt_target(last['target'], ol)}"
    r_ttft = _ratio(first["ttft_p50"], last["ttft_p50"])
    r_itl = _ratio(first["itl_p50"], last["itl_p50"])
    if not np.isfinite(r_ttft):
        return []
    if not np.isfinite(r_itl):
        return [f"TTFT p50 grows {r_ttft:.1f}x {span}."]
    if r_ttft > 2 * r_itl:
        verdict = "prefill queueing dominates"
    elif r_itl > 2 * r_ttft:
        verdict = "decode slows down as batches grow"
    else:
        verdict = "prefill and decode slow down alike"
    return [f"TTFT p50 grows {r_ttft:.1f}x {span} while ITL p50 grows {r_itl:.1f}x: {verdict}."]


def _throughput_scaling(s: RunSummary) -> list[str]:
    t = _measured(s.table)
    if len(t) < 2:
        return []
    ol = s.run.open_loop
    first, last = t.iloc[0], t.iloc[-1]
    knee = s.headline.knee_level
    if knee is not None and knee in set(t["level"]):
        k = t[t["level"] == knee].iloc[0]
        up = _ratio(first["output_tok_per_s"], k["output_tok_per_s"])
        after = _ratio(k["output_tok_per_s"], last["output_tok_per_s"])
        return [
            f"Output throughput rises {up:.1f}x from {fmt_target(first['target'], ol)} to "
            f"{fmt_target(k['target'], ol)}, then only {after:.2f}x to {fmt_target(last['target'], ol)}: "
            f"the server is saturated (knee at {fmt_target(k['target'], ol)})."
        ]
    total = _ratio(first["output_tok_per_s"], last["output_tok_per_s"])
    if not np.isfinite(total):
        return []
    return [
        f"Output throughput changes {total:.1f}x from {fmt_target(first['target'], ol)} to "
        f"{fmt_target(last['target'], ol)} with no knee: not saturated within the levels tested."
    ]


def _slo(s: RunSummary) -> list[str]:
    h = s.headline
    if not h.slo_set:
        return ["No SLO is set in the scenario: goodput counts every successful request."]
    limits = ", ".join(f"{k.removesuffix('_ms').upper()} ≤ {v:g} ms" for k, v in s.run.slo.items())
    if h.best_slo_target is None:
        return [f"No level has ≥ 90% of requests meeting the SLO ({limits})."]
    return [
        f"Highest level meeting the SLO ({limits}) for ≥ 90% of requests: "
        f"{fmt_target(h.best_slo_target, s.run.open_loop)}, goodput {h.best_slo_goodput_rps:.2f} req/s "
        f"({h.best_slo_fraction:.0%} meeting)."
    ]


def _errors(s: RunSummary) -> list[str]:
    e = s.errors
    if e.empty:
        return ["No request failed."]
    total = int(e["count"].sum())
    n_all = len(s.run.requests)
    kinds = e.groupby("error_kind")["count"].sum().sort_values(ascending=False)
    kinds_text = ", ".join(f"{k} {int(v)}" for k, v in kinds.items())
    if set(kinds.index) == {"cut_off"}:
        return [f"{total} request(s) were still in flight when the run stopped (cut_off): expected, not a failure."]
    worst = s.table.sort_values("error_rate", ascending=False).iloc[0]
    msg = (
        f"{total} of {n_all} requests failed ({total / n_all:.1%}): {kinds_text}; worst level "
        f"{fmt_target(worst['target'], s.run.open_loop)} with {worst['error_rate']:.1%} failed."
    )
    return [msg]


def _tokens(s: RunSummary) -> list[str]:
    t = s.table
    notes = []
    n = int(t["n_measured"].sum())
    pm, cm, mt = int(t["prompt_mismatch"].sum()), int(t["completion_mismatch"].sum()), int(t["multi_token"].sum())
    if pm:
        notes.append(
            f"{pm} of {n} measured requests had a prompt token count different from the one requested: "
            "the prompt lengths are not exact."
        )
    if cm:
        data = s.run.scenario.get("data") or {}
        why = "unexpected with ignore_eos on" if data.get("ignore_eos") else "requests stopped early at an end token"
        notes.append(f"{cm} of {n} measured requests returned a completion length other than max_tokens: {why}.")
    if mt:
        notes.append(
            f"{mt} measured requests received events carrying several tokens: their gaps are per event, "
            "TPOT stays exact."
        )
    return notes


def _open_loop(s: RunSummary) -> list[str]:
    if not s.run.open_loop or "achieved_rate" not in s.table:
        return []
    notes = []
    for r in s.table.itertuples(index=False):
        if r.achieved_rate < r.target_rate * (1 - RATE_SHORTFALL):
            notes.append(
                f"At {r.target_rate:g} req/s target only {r.achieved_rate:.2f} arrivals/s were achieved and "
                f"{r.waited_fraction:.0%} of arrivals waited for a free slot: the client cap (max_in_flight) or "
                "the server limited the load."
            )
        elif r.n_waited:
            notes.append(
                f"At {r.target_rate:g} req/s, {r.n_waited} arrival(s) ({r.waited_fraction:.0%}) waited for a "
                "free slot before being sent."
            )
    return notes


def _client_path(s: RunSummary) -> list[str]:
    """A run that streamed through a comparison client (e.g. the openai SDK user) says so first."""
    client = s.run.meta.get("client") or "suite"
    if client == "suite":
        return []
    return [
        f"This run streamed through '{client}', not the suite's streaming client: its token times include that "
        "client's own per-chunk work and queueing, so compare it with a suite run rather than read it as the server's "
        "latency (docs/performance.md)."
    ]


def _client_health(s: RunSummary) -> list[str]:
    """Levels where the load generator itself was the bottleneck (vlab.locust.monitor): their client latencies are
    suspect, and more worker processes (or a quieter machine) are the fix."""
    t = s.table
    if "client_flag" not in t:
        return []
    out = []
    for flag, advice in (
        ("saturated", "add worker processes (--processes N)"),
        ("starved", "the machine was busy with other work: give the load generator a free core"),
    ):
        hit = t[t["client_flag"] == flag]
        if hit.empty:
            continue
        names = ", ".join(fmt_target(v, s.run.open_loop) for v in hit["target"])
        worst = hit.loc[hit["client_cpu_max"].idxmax()]
        out.append(
            f"The load generator was {flag} at {names} (up to {worst['client_cpu_max']:.0%} of a core, hub lag up to "
            f"{hit['client_lag_max_ms'].max():.0f} ms): client-side latencies there may be overstated; {advice}."
        )
    return out


def _retrieval(s: RunSummary) -> list[str]:
    """RAG runs: how retrieval compares with generation, and how long the retrieved prompts were."""
    t = _measured(s.table)
    if "retrieval_n" not in t or not (t["retrieval_n"] > 0).any():
        return []
    t = t[t["retrieval_n"] > 0]
    first = t.iloc[-1]
    share = first["retrieval_p50"] / (first["retrieval_p50"] + first["e2e_p50"])
    return [
        f"Retrieval took p50 {first['retrieval_p50']:.0f} ms at {fmt_target(first['target'], s.run.open_loop)} "
        f"against p50 TTFT {first['ttft_p50']:.0f} ms and E2E {first['e2e_p50']:.0f} ms: {share:.0%} of the time a "
        f"user waited for an answer. Retrieved prompts held {first['prompt_tokens_p50']:.0f} tokens at p50 "
        f"({first['prompt_tokens_min']:.0f}–{first['prompt_tokens_max']:.0f})."
    ]


def _samples(s: RunSummary) -> list[str]:
    t = s.table
    few = t[t["n_measured"] < MIN_SAMPLES]
    if few.empty:
        return []
    names = ", ".join(fmt_target(v, s.run.open_loop) for v in few["target"])
    return [f"Few measured requests (< {MIN_SAMPLES}) at {names}: p99 and p99.9 rest on a handful of requests."]


# ---------------------------------------------------------------------------------------------- server metrics
def _server_metrics(s: RunSummary) -> list[str]:
    """Sentences from the server's /metrics series (rule 9)."""
    srv = s.server
    if srv is None:
        return []
    if not srv.available:
        return [f"Server metrics were not recorded: {srv.series.reason}."]
    from analysis.server_metrics import foreign_requests

    h = srv.headline
    t = srv.table
    ol = s.run.open_loop
    notes: list[str] = []
    parts: list[str] = []
    if np.isfinite(h.max_waiting):
        if h.first_waiting_level is None:
            parts.append(f"no request waited in the server's queue (at most {h.max_running:g} running)")
        else:
            later = [int(v) for v in t["level"] if v >= h.first_waiting_level]
            where = fmt_target(h.first_waiting_target or 0.0, ol)
            if later == h.waiting_levels:
                parts.append(
                    f"requests waited in the server's queue from level {h.first_waiting_level} ({where}) on "
                    f"(up to {h.max_waiting:g} waiting)"
                )
            else:
                names = ", ".join(fmt_target(v, ol) for v in t[t["max_waiting"] > 0]["target"])
                parts.append(f"requests waited in the server's queue at {names} (up to {h.max_waiting:g} waiting)")
    if np.isfinite(h.peak_kv_usage):
        cap = f" of {h.kv_capacity_tokens:,} tokens" if h.kv_capacity_tokens else ""
        at = f" at {fmt_target(h.peak_kv_target, ol)}" if h.peak_kv_target is not None else ""
        parts.append(f"KV cache peaked at {h.peak_kv_usage:.0%}{cap}{at}")
    if np.isfinite(h.preemptions):
        if h.preemptions > 0:
            by = [(r.target, r.preemptions) for r in t.itertuples(index=False) if r.preemptions > 0]
            detail = ", ".join(f"{fmt_target(tg, ol)}: {n:g}" for tg, n in by)
            parts.append(f"{h.preemptions:g} preemption{'s' if h.preemptions != 1 else ''} ({detail})")
        else:
            parts.append("no preemption")
    if parts:
        notes.append("Server: " + "; ".join(parts) + ".")
    if np.isfinite(h.prefix_hit_rate):
        per = [
            f"{fmt_target(r.target, ol)}: {r.prefix_hit_rate:.0%}"
            for r in t.itertuples(index=False)
            if np.isfinite(r.prefix_hit_rate)
        ]
        detail = f" ({', '.join(per)})" if len(per) > 1 else ""
        notes.append(
            f"Prefix cache hit rate {h.prefix_hit_rate:.0%} of {h.prefix_queries:,.0f} prompt tokens looked up{detail}."
        )
    elif srv.series.info.get("prefix_caching") is False:
        notes.append("Prefix caching is off on this server: every prompt token is computed.")
    if np.isfinite(h.server_ttft_mean_ms) and np.isfinite(h.client_ttft_mean_ms):
        over = h.client_ttft_mean_ms - h.server_ttft_mean_ms
        notes.append(
            f"Mean TTFT {h.client_ttft_mean_ms:.0f} ms at the client vs {h.server_ttft_mean_ms:.0f} ms inside the "
            f"server: {over:.0f} ms is network, HTTP front end and client overhead."
        )
    extra = foreign_requests(h)
    if extra:
        notes.append(
            f"The server answered about {extra:.0f} more requests than this run sent while it was sampled: another "
            "client shared the server, and its load is in the server-side numbers."
        )
    return notes
