"""Plain-language observations computed from a run's summary: only sentences the data supports.

Each rule is a small function returning sentences. Every comparison names its levels' sample sizes, and says "not
enough data to tell" instead of a ratio or a verdict when a level has fewer than `MIN_SAMPLES` measured requests or
the two levels' 95% intervals overlap (`vlab.core.stats`). Levels are compared in order of target; "first"/"last" =
the lowest/highest target with measured requests.

1. status: interrupted, still running, failed (with its reason) or not started; partial lines; missing tokens.csv;
   what the dataset loader skipped; approximate prompt lengths; a comparison client (the openai SDK user).
2. the load generator's own health (saturated or starved levels).
3. latency growth: TTFT p50 and pooled ITL p50, last against first. TTFT ratio > 2 × ITL ratio → "prefill queueing
   dominates"; ITL ratio > 2 × TTFT ratio → "decode slows down as batches grow"; else both grow alike.
4. throughput scaling: first → knee and knee → last ("the server is saturated"), or first → last with no knee.
5. server metrics (`analysis.server_metrics`): queueing, KV-cache peak and preemptions; prefix-cache hit rate;
   server vs client TTFT; traffic from other clients; the server's own output rate against the client's.
6. SLO: the highest level where ≥ 90 % of its requests meet every objective, with its request count.
7. outcomes: failed requests by kind; cut-off requests (never failures) and rate-limited ones (HTTP 429) apart.
8. token counts: prompt and completion mismatches, multi-token events.
9. open loop: achieved arrival rate against target, real slot waits, and the generator's dispatch lag.
10. retrieval (RAG runs), levels that ended at their cap, and levels with too few measured requests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.summary import SLO_ATTAINMENT, enough, interval
from vlab.core.stats import MIN_SAMPLES, distinguishable

if TYPE_CHECKING:
    from analysis.summary import RunSummary

RATE_SHORTFALL = 0.05
NOT_ENOUGH = "not enough data to tell"


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
        _tokens, _first_chunk, _open_loop, _retrieval, _caps, _samples,
    )  # fmt: skip
    for rule in rules:
        out.extend(rule(summary))
    return out


EARLY_CHUNK_MS = 5.0
"""First chunk earlier than the first token by more than this (and 10%) at p50: the server sends its role early."""


def _first_chunk(s: RunSummary) -> list[str]:
    """Where the server sends its (role-only) first chunk well before the first token, TTFT (first generated token)
    and the first-chunk time (`vllm bench serve`'s TTFT) differ: say both, per level, with their sample sizes."""
    t = _levels(s.table)
    if "first_chunk_p50" not in t or t.empty:
        return []
    gap = t["ttft_p50"] - t["first_chunk_p50"]
    early = t[(gap > EARLY_CHUNK_MS) & (gap > 0.1 * t["ttft_p50"])]
    if early.empty:
        return []
    parts = ", ".join(
        f"{fmt_target(r['target'], s.run.open_loop)}: {r['first_chunk_p50']:.0f} against {r['ttft_p50']:.0f} ms"
        f" (n = {int(r['n_measured'])})"
        for _, r in early.iterrows()
    )
    return [
        "The server sent a first chunk without generated text well before the first token (p50 first chunk "
        f"against TTFT: {parts}). TTFT here is the first generated token; `vllm bench serve` and first-chunk "
        "timers would report the earlier figure."
    ]


def _levels(table: pd.DataFrame) -> pd.DataFrame:
    """Levels with measured requests, by target (one row per distinct target: the first one)."""
    t = table[table["n_measured"] > 0].sort_values("target", kind="stable")
    return t.drop_duplicates(subset="target", keep="first")


def _sizes(*rows: Any) -> str:
    return "n = " + " and ".join(f"{int(r['n_measured'])}" for r in rows)


def _status(s: RunSummary) -> list[str]:
    meta = s.run.meta
    notes = []
    if meta.status in ("interrupted", "running"):
        notes.append(f"The run is marked '{meta.status}': the last level may be partial and its numbers less reliable.")
    if meta.status in ("failed", "not_started"):
        notes.append(f"The run {'failed' if meta.status == 'failed' else 'did not start'}: {meta.status_reason}.")
    elif meta.status_reason:
        notes.append(f"Notes on the run: {meta.status_reason}.")
    if s.run.dropped_partial_lines:
        notes.append(f"A partial last line was ignored in {', '.join(s.run.dropped_partial_lines)}.")
    if s.run.tokens_path is None:
        notes.append("tokens.csv is missing: pooled ITL gaps are unavailable, throughput is prorated from requests.")
    if meta.prompt_lengths and meta.prompt_lengths.startswith("approximate"):
        notes.append(f"Prompt lengths are {meta.prompt_lengths}: compare the requested and the server's counts.")
    dataset = meta.dataset or {}
    if dataset.get("line") and (dataset.get("skipped") or dataset.get("cut")):
        notes.append(f"Dataset: {dataset['line']}.")
    return notes


def _client_path(s: RunSummary) -> list[str]:
    """A run that streamed through a comparison client (e.g. the openai SDK user) says so first."""
    client = s.run.meta.client or "suite"
    if client == "suite":
        return []
    return [
        f"This run streamed through '{client}', not the suite's streaming client: its token times include that "
        "client's own per-chunk work and queueing, so compare it with a suite run rather than read it as the server's "
        "latency (docs/performance.md)."
    ]


def _client_health(s: RunSummary) -> list[str]:
    """Levels where the load generator itself was the bottleneck (`vlab.core.client_health`): their client latencies
    are suspect, and more worker processes (or a quieter machine) are the fix."""
    t = s.table
    if "client_flag" not in t:
        return []
    out = []
    for flag, advice in (
        ("saturated", "add worker processes (--processes N)"),
        ("blocked", "one long step of the client's own held its streams (the flagged samples show when)"),
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


def _compare(a: Any, b: Any, metric: str) -> tuple[float, str]:
    """(b/a of a metric's p50, verdict): "few" when a level has too few requests, "same" when the two 95% intervals
    overlap (no change the data can show), "diff" otherwise."""
    if not (enough(a) and enough(b)):
        return math.nan, "few"
    ia, ib = interval(a, metric), interval(b, metric)
    ratio = _ratio(ia.value, ib.value)
    if not np.isfinite(ratio):
        return math.nan, "few"
    return ratio, "diff" if distinguishable(ia, ib) else "same"


def _ends(t: pd.DataFrame) -> tuple[Any, Any]:
    """The lowest and highest levels to compare: those with enough measured requests, when two such exist (a short
    first level does not silence the comparison of the others); else simply the first and the last."""
    ok = t[[enough(r) for _, r in t.iterrows()]]
    use = ok if len(ok) >= 2 else t
    return use.iloc[0], use.iloc[-1]


def _latency_growth(s: RunSummary) -> list[str]:
    t = _levels(s.table)
    if len(t) < 2:
        return []
    first, last = _ends(t)
    ol = s.run.open_loop
    span = f"from {fmt_target(first['target'], ol)} to {fmt_target(last['target'], ol)} ({_sizes(first, last)})"
    r_ttft, v_ttft = _compare(first, last, "ttft")
    r_itl, v_itl = _compare(first, last, "itl")
    if v_ttft == "few":
        return [f"TTFT p50 {span}: {NOT_ENOUGH} (fewer than {MIN_SAMPLES} measured requests)."]
    ttft_text = f"grows {r_ttft:.1f}x" if v_ttft == "diff" else f"stays within its 95% interval ({r_ttft:.2f}x)"
    if v_itl == "few":
        return [f"TTFT p50 {ttft_text} {span}; ITL: {NOT_ENOUGH}."]
    itl_text = f"grows {r_itl:.1f}x" if v_itl == "diff" else f"stays within its 95% interval ({r_itl:.2f}x)"
    if v_ttft == "same" and v_itl == "same":
        return [f"TTFT p50 {ttft_text} and ITL p50 {itl_text} {span}: the load did not slow the server measurably."]
    if r_ttft > 2 * r_itl:
        verdict = "prefill queueing dominates"
    elif r_itl > 2 * r_ttft:
        verdict = "decode slows down as batches grow"
    else:
        verdict = "prefill and decode slow down alike"
    return [f"TTFT p50 {ttft_text} {span} while ITL p50 {itl_text}: {verdict}."]


def _throughput_scaling(s: RunSummary) -> list[str]:
    t = _levels(s.table)
    ol = s.run.open_loop
    if len(t) < 2:
        if len(t) == 1:
            row = t.iloc[0]
            return [
                f"One load level only ({fmt_target(row['target'], ol)}, n = {int(row['n_measured'])}): how "
                "throughput scales with load cannot be told from this run."
            ]
        return []
    first, last = _ends(t)
    h = s.headline
    if h.knee_level is not None and h.knee_level in set(t["level"]):
        k = t[t["level"] == h.knee_level].iloc[0]
        up = _ratio(first["output_tok_per_s"], k["output_tok_per_s"])
        after = _ratio(k["output_tok_per_s"], last["output_tok_per_s"])
        return [
            f"Output throughput rises {up:.1f}x from {fmt_target(first['target'], ol)} to "
            f"{fmt_target(k['target'], ol)}, then only {after:.2f}x to {fmt_target(last['target'], ol)}: "
            f"the server is saturated (knee at {fmt_target(k['target'], ol)}; {_sizes(first, k, last)})."
        ]
    total = _ratio(first["output_tok_per_s"], last["output_tok_per_s"])
    if not np.isfinite(total):
        return []
    if not h.knee_supported or not (enough(first) and enough(last)):
        return [
            f"Output throughput changes {total:.1f}x from {fmt_target(first['target'], ol)} to "
            f"{fmt_target(last['target'], ol)} ({_sizes(first, last)}); whether it saturates: {NOT_ENOUGH}."
        ]
    return [
        f"Output throughput changes {total:.1f}x from {fmt_target(first['target'], ol)} to "
        f"{fmt_target(last['target'], ol)} ({_sizes(first, last)}) with no knee: not saturated within the levels "
        "tested."
    ]


def _slo(s: RunSummary) -> list[str]:
    h = s.headline
    if not h.slo_set:
        return ["No SLO is set in the scenario: goodput counts every successful request."]
    limits = ", ".join(f"{k.removesuffix('_ms').upper()} ≤ {v:g} ms" for k, v in s.run.slo.items())
    if h.best_slo_target is None:
        few = s.table[s.table["slo_n"] < MIN_SAMPLES]
        if len(few) == len(s.table):
            return [f"Whether a level meets the SLO ({limits}): {NOT_ENOUGH} (fewer than {MIN_SAMPLES} requests each)."]
        return [
            f"No level with ≥ {MIN_SAMPLES} requests has ≥ {SLO_ATTAINMENT:.0%} of them meeting the SLO ({limits})."
        ]
    return [
        f"Highest level meeting the SLO ({limits}) for ≥ {SLO_ATTAINMENT:.0%} of requests: "
        f"{fmt_target(h.best_slo_target, s.run.open_loop)}, goodput {h.best_slo_goodput_rps:.2f} req/s "
        f"({h.best_slo_fraction:.0%} of {h.best_slo_n} requests meeting)."
    ]


def _errors(s: RunSummary) -> list[str]:
    t = s.table
    n_failed, n_ok = int(t["n_failed"].sum()), int(t["n_ok"].sum())
    cut, limited = int(t["n_cut_off"].sum()), int(t["n_rate_limited"].sum())
    notes = []
    e = s.errors
    failures = e[~e["error_kind"].isin(["cut_off", "rate_limited"])] if not e.empty else e
    if n_failed:
        kinds = failures.groupby("error_kind")["count"].sum().sort_values(ascending=False)
        kinds_text = ", ".join(f"{k} {int(v)}" for k, v in kinds.items())
        worst = t.sort_values("error_rate", ascending=False).iloc[0]
        notes.append(
            f"{n_failed} of {n_failed + n_ok} requests failed ({n_failed / (n_failed + n_ok):.1%}): {kinds_text}; "
            f"worst level {fmt_target(worst['target'], s.run.open_loop)} with {worst['error_rate']:.1%} failed."
        )
    else:
        notes.append("No request failed.")
    if cut:
        notes.append(
            f"{cut} request(s) were still in flight when the run stopped (cut off): not failures, not measured."
        )
    if limited:
        notes.append(f"{limited} request(s) were refused with HTTP 429 (rate limited): load refused on purpose, not "
                     "server failures; they count against the SLO.")  # fmt: skip
    return notes


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
        why = (
            "unexpected with ignore_eos on"
            if s.run.scenario.data.ignore_eos
            else "requests stopped early at an end token"
        )
        notes.append(f"{cm} of {n} measured requests returned a completion length other than max_tokens: {why}.")
    if mt:
        notes.append(
            f"{mt} of {n} measured requests received events carrying several tokens: their gaps are per event, "
            "TPOT stays exact."
        )
    return notes


def _open_loop(s: RunSummary) -> list[str]:
    if not s.run.open_loop or "achieved_rate" not in s.table:
        return []
    notes = []
    for r in s.table.itertuples(index=False):
        if not r.n_arrivals:
            notes.append(f"At {r.target_rate:g} req/s no arrival was due inside the measurement window.")
            continue
        if r.achieved_rate < r.target_rate * (1 - RATE_SHORTFALL):
            cause = (
                "every slot was busy (the client cap max_in_flight, or a slow server, limited the load)"
                if r.n_waited
                else "the load generator fell behind its schedule"
            )
            notes.append(
                f"At {r.target_rate:g} req/s target, {r.achieved_rate:.2f} arrivals/s were achieved "
                f"({r.n_arrivals} arrivals): {cause}."
            )
        if r.n_waited:
            notes.append(
                f"At {r.target_rate:g} req/s, {r.n_waited} of {r.n_arrivals} arrivals ({r.waited_fraction:.0%}) found "
                "every slot busy and waited for one before being sent."
            )
    lag = s.table["dispatch_lag_p99_ms"].to_numpy(dtype=float)
    if np.isfinite(lag).any():
        worst = float(np.nanmax(s.table["dispatch_lag_max_ms"].to_numpy(dtype=float)))
        notes.append(
            f"The load generator's own dispatch lag (send − scheduled arrival, with a slot free): p99 "
            f"{np.nanmax(lag):.2f} ms, max {worst:.2f} ms."
        )
    return notes


def _retrieval(s: RunSummary) -> list[str]:
    """RAG runs: how retrieval compares with generation, and how long the retrieved prompts were."""
    t = s.table[s.table["n_measured"] > 0]
    if "retrieval_n" not in t or not (t["retrieval_n"] > 0).any():
        return []
    row = t[t["retrieval_n"] > 0].iloc[-1]
    share = row["retrieval_p50"] / (row["retrieval_p50"] + row["e2e_p50"])
    return [
        f"Retrieval took p50 {row['retrieval_p50']:.0f} ms at {fmt_target(row['target'], s.run.open_loop)} "
        f"against p50 TTFT {row['ttft_p50']:.0f} ms and E2E {row['e2e_p50']:.0f} ms (n = {int(row['n_measured'])}): "
        f"{share:.0%} of the time a user waited for an answer. Retrieved prompts held {row['prompt_tokens_p50']:.0f} "
        f"tokens at p50 ({row['prompt_tokens_min']:.0f}–{row['prompt_tokens_max']:.0f})."
    ]


def _caps(s: RunSummary) -> list[str]:
    t = s.table
    capped = t[t["ended_by"] == "cap"] if "ended_by" in t else t.iloc[0:0]
    if capped.empty:
        return []
    names = ", ".join(
        f"{fmt_target(r.target, s.run.open_loop)} ({r.n_ok + r.n_failed} ended)" for r in capped.itertuples()
    )
    return [f"Levels ended at their cap (max_duration) before reaching their request count: {names}."]


def _samples(s: RunSummary) -> list[str]:
    t = s.table
    few = t[t["n_measured"] < MIN_SAMPLES]
    if few.empty:
        return []
    names = ", ".join(f"{fmt_target(r.target, s.run.open_loop)} (n = {r.n_measured})" for r in few.itertuples())
    return [
        f"Fewer than {MIN_SAMPLES} measured requests at {names}: their percentiles are rough and no comparison with "
        f"them is made; raise the level's `requests` or `duration`."
    ]


# ---------------------------------------------------------------------------------------------- server metrics
def _server_metrics(s: RunSummary) -> list[str]:
    """Sentences from the server's /metrics series (rule 5)."""
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
            f"server ({h.client_requests} requests): {over:.0f} ms is network, HTTP front end and client overhead."
        )
    if "server_gen_tok_per_s" in t and t["server_gen_tok_per_s"].notna().any():
        both = t.merge(s.table[["level", "output_tok_per_s"]], on="level")
        both = both[both["server_gen_tok_per_s"].notna() & (both["server_gen_tok_per_s"] > 0)]
        if len(both):
            ratios = both["output_tok_per_s"] / both["server_gen_tok_per_s"]
            spread = (
                f"{ratios.iloc[0]:.3f} of it" if len(both) == 1
                else f"{ratios.min():.3f}–{ratios.max():.3f} of it across {len(both)} levels"
            )  # fmt: skip
            notes.append(
                f"Output tok/s measured by the client against the server's own generation_tokens rate: {spread}."
            )
    extra = foreign_requests(h)
    if extra:
        notes.append(
            f"The server answered about {extra:.0f} more requests than this run sent while it was sampled: another "
            "client shared the server, and its load is in the server-side numbers."
        )
    return notes
