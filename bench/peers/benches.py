"""The three benches (and the smoke check): what runs, against which server, with which workload.

1. capacity and timing truth — fake server, 20 ms pacing, 256-token streams, staggered and lockstep, at 50, 200,
   500 and 1,000 streams; plus bulk (no pacing) at 100 streams;
2. edge cases — fake server, small runs, each with one behaviour: several tokens per event, a 1.5 s stall, chat's
   role chunk sent first, a stream cut mid-way, HTTP 500, HTTP 429;
3. agreement on a real server — the local vLLM: 512-token prompts, 64 output tokens, ignore_eos, 8 concurrent,
   64 requests, a fresh random seed per tool.

Every tool runs pinned to the client core(s), the fake server to its own core.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.peers.common import REPO, ClientRequest, ToolReport, Workload
from bench.peers.execute import RunRecord, priority_prefix, run_tool
from bench.peers.metrics import Capacity, Observed, capacity, observed, truth_summary
from bench.peers.tools import TOOLS
from bench.peers.truth import FakeServer, parse_events

Log = Callable[[str], None]


@dataclass(frozen=True)
class Cores:
    client: str = "0"
    server: int = 1


def _run_on_fake(
    tool: str, w: Workload, server_args: list[str], out: Path, cores: Cores, timeout_s: float
) -> tuple[RunRecord, ToolReport | None, dict]:
    """One tool against a fresh fake server; returns the run, the tool's report and the server's raw truth."""
    with FakeServer(server_args, cores.server, out, tuple(priority_prefix())) as server:
        rec, report = run_tool(TOOLS[tool], w, server.url, out, cores.client, timeout_s, server.proc.pid)
        raw = server.raw_events()
    (out / "server-events.json").write_bytes(raw)
    return rec, report, json.loads(raw)


# ----------------------------------------------------------------------------------------------------- bench 1
@dataclass(frozen=True)
class CapacityPlan:
    modes: tuple[str, ...] = ("staggered", "lockstep")
    streams: tuple[int, ...] = (50, 200, 500, 1000)
    interval_ms: float = 20.0
    tokens: int = 256
    duration_s: float = 10.5
    rounds: int = 2
    """Count-bound tools send streams × rounds requests (2 × 5.12 s of 256 tokens at 20 ms ≈ duration_s)."""
    bulk_streams: int = 100
    bulk_duration_s: float = 8.0
    bulk_requests: int = 1500
    warmup_s: float = 2.0
    timeout_s: float = 240.0
    noisy_cpu: float = 0.5
    """Foreign load (cores) above which a row is run once more (`retries`), the second run kept either way."""
    retries: int = 0


def bench_capacity(tools: list[str], plan: CapacityPlan, out: Path, cores: Cores, log: Log) -> list[Capacity]:
    results: list[Capacity] = []
    cases = [("bulk", plan.bulk_streams)] if plan.bulk_streams else []
    cases += [(m, n) for m in plan.modes for n in plan.streams]
    for mode, n in cases:
        bulk = mode == "bulk"
        w = Workload(
            endpoint="completions",
            concurrency=n,
            requests=plan.bulk_requests if bulk else n * plan.rounds,
            duration_s=plan.bulk_duration_s if bulk else plan.duration_s,
            prompt_tokens=16,
            output_tokens=plan.tokens,
            model="fake",
        )
        args = ["--mode", mode] + ([] if bulk else ["--interval-ms", f"{plan.interval_ms:g}"])
        for tool in tools:
            t0 = time.monotonic()
            other = math.nan
            for attempt in range(1 + plan.retries):
                folder = out / "bench1" / f"{mode}-{n}" / (tool if attempt == 0 else f"{tool}-retry{attempt}")
                rec, report, raw = _run_on_fake(tool, w, args, folder, cores, timeout_s=plan.timeout_s)
                res = Capacity(tool, mode, n)
                if report is None:
                    res.status = rec.error
                else:
                    capacity(res, report, parse_events(raw), rec.samples, 1.0 if bulk else plan.warmup_s)
                    if rec.error:
                        res.notes.append(rec.error)
                    if res.client_cpu > 0:
                        res.tokens_per_s_per_core = res.tokens_per_s / res.client_cpu
                    if tool == "suite":
                        text = (folder / "output.log").read_text(errors="replace")
                        res.saturation_warning = "load generator" in text and " at level " in text
                        if "starved at level" in text:
                            res.notes.append("suite monitor: starved by the machine")
                if attempt:
                    res.notes.append(f"retry {attempt}: the first run had {other:.2f} cores of foreign load")
                other = res.other_cpu
                if math.isnan(other) or other <= plan.noisy_cpu:
                    break
            if not math.isnan(res.other_cpu) and res.other_cpu > plan.noisy_cpu:
                res.notes.append(f"noisy: {res.other_cpu:.2f} cores of foreign load")
            results.append(res)
            log(
                f"  bench1 {mode:<9} {n:>5} {tool:<15} {res.tokens_per_s:>9.0f} tok/s  CPU {res.client_cpu:.2f}  "
                f"ITL err p99 {res.itl_err_p99:.2f} ms  TTFT err p99 {res.ttft_err_p99:.2f} ms  "
                f"[{res.status}] ({time.monotonic() - t0:.0f} s)"
            )
    return results


# ----------------------------------------------------------------------------------------------------- bench 2
@dataclass(frozen=True)
class EdgeCase:
    name: str
    description: str
    server_args: tuple[str, ...]
    endpoint: str = "completions"
    server_cut: bool = False
    """The server cuts every answered stream: those requests are failures, not the tool's own stop."""


EDGE_CASES: tuple[EdgeCase, ...] = (
    EdgeCase("multi_token", "every event carries 4 tokens (32 tokens in 8 events)", ("--tokens-per-event", "4")),
    EdgeCase("stall", "1.5 s of silence after the 10th token", ("--stall-ms", "1500", "--stall-after", "10")),
    EdgeCase("role_chunk", "chat: role chunk at once, first token 100 ms later", ("--role-first",), "chat"),
    EdgeCase("stream_cut", "connection aborted after 10 token events", ("--cut-after", "10"), server_cut=True),
    EdgeCase("http_500", "every 2nd request answered 500", ("--status", "500", "--status-every", "2")),
    EdgeCase("http_429", "every 2nd request answered 429", ("--status", "429", "--status-every", "2")),
)


@dataclass
class EdgeResult:
    case: str
    tool: str
    status: str = "ok"
    truth: Observed = field(default_factory=Observed)
    reported: Observed = field(default_factory=Observed)
    source: str = ""


def edge_truth(raw: dict, server_cut: bool) -> Observed:
    """The truth of one edge run: requests the tool itself abandoned at its stop are left out (neither success
    nor failure), unless the server cut them."""
    truth = parse_events(raw)
    if not server_cut:
        truth = {k: t for k, t in truth.items() if t.complete or t.status != 200}
    return truth_summary(truth)


def bench_edges(tools: list[str], out: Path, cores: Cores, log: Log, cases: tuple[EdgeCase, ...] = EDGE_CASES):
    results: list[EdgeResult] = []
    for case in cases:
        stall = "--stall-ms" in case.server_args
        w = Workload(
            endpoint=case.endpoint,  # type: ignore[arg-type]
            concurrency=2,
            requests=6,
            duration_s=5.0 if stall else 3.0,
            prompt_tokens=16,
            output_tokens=32,
            model="fake",
        )
        args = ["--mode", "staggered", "--interval-ms", "20", "--ttft-ms", "100", *case.server_args]
        for tool in tools:
            folder = out / "bench2" / case.name / tool
            rec, report, raw = _run_on_fake(tool, w, args, folder, cores, timeout_s=180)
            res = EdgeResult(case.name, tool, truth=edge_truth(raw, case.server_cut))
            if report is None:
                res.status = rec.error
            else:
                res.reported = observed(report)
                res.source = report.aggregates.source
                if rec.error:
                    res.status = f"ok ({rec.error})"
            results.append(res)
            log(f"  bench2 {case.name:<12} {tool:<15} reported {_brief(res.reported)} | truth {_brief(res.truth)}")
    return results


def _brief(o: Observed) -> str:
    return (
        f"TTFT {o.ttft_ms:.1f} ITL {o.itl_ms:.1f} TPOT {o.tpot_ms:.1f} tok {o.output_tokens:.1f} "
        f"ok {o.ok} err {o.errors}"
    )


# ----------------------------------------------------------------------------------------------------- bench 3
@contextlib.contextmanager
def own_vllm(port: int, folder: Path, log: Log) -> Iterator[str]:
    """A quiet vLLM of our own for bench 3 (`vlab serve --profile cpu-smollm2`), stopped afterwards with its whole
    process group; yields its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    with open(folder / "vllm-server.log", "w") as fh:
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/python"), "-m", "vlab", "serve", "--profile", "cpu-smollm2", "--port", str(port)],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=5).read()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_path = folder / "vllm-server.log"
                    raise RuntimeError(f"own vLLM on port {port} did not start (see {log_path})") from exc
                time.sleep(2)
        log(f"  bench3 own vLLM up at {url}")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass(frozen=True)
class AgreementPlan:
    url: str = "http://127.0.0.1:8100"
    model: str = "smollm2"
    prompt_tokens: int = 512
    output_tokens: int = 64
    concurrency: int = 8
    requests: int = 64


@dataclass
class Agreement:
    """Bench 3, one tool: its own aggregates, and the same-definition numbers recomputed from its per-request
    records: TTFT mean, TPOT = mean of (E2E − TTFT) / (output tokens − 1), output tok/s = output tokens of successful
    requests / (last end − first start)."""

    tool: str
    status: str = "ok"
    reported: dict = field(default_factory=dict)
    same_def: dict = field(default_factory=dict)
    wall_s: float = math.nan


def same_definition(reqs: list[ClientRequest]) -> dict:
    ok = [r for r in reqs if r.ok]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    tpot = [
        (r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1)
        for r in ok
        if r.e2e_ms is not None and r.ttft_ms is not None and r.output_tokens and r.output_tokens > 1
    ]
    spans = [(r.start_mono_s, r.start_mono_s + r.e2e_ms / 1000.0) for r in ok if r.start_mono_s and r.e2e_ms]
    rate = math.nan
    if spans:
        window = max(e for _, e in spans) - min(s for s, _ in spans)
        rate = sum(r.output_tokens or 0 for r in ok) / window if window > 0 else math.nan
    return {
        "requests_ok": len(ok),
        "ttft_mean_ms": sum(ttft) / len(ttft) if ttft else math.nan,
        "tpot_mean_ms": sum(tpot) / len(tpot) if tpot else math.nan,
        "output_tok_s": rate,
    }


def warm_up(plan: AgreementPlan, requests: int = 8) -> None:
    """A few requests before the first tool, so that it does not pay a freshly started server's first steps (the
    run of 2026-12-01 did not have this: `vllm bench serve`, first, saw a fresh server)."""
    body = json.dumps({"model": plan.model, "prompt": "warm up " * 64, "max_tokens": 16}).encode()
    for _ in range(requests):
        req = urllib.request.Request(
            plan.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=120).read()


def bench_agreement(tools: list[str], plan: AgreementPlan, out: Path, cores: Cores, log: Log) -> list[Agreement]:
    """Run `vllm bench serve` first: the time-bounded tools then run for as long as it took for the same count."""
    try:
        urllib.request.urlopen(plan.url + "/v1/models", timeout=10).read()
    except OSError as exc:
        return [Agreement(t, status=f"could not run: server {plan.url} unreachable ({exc})") for t in tools]
    warm_up(plan)
    order = sorted(tools, key=lambda t: t != "vllm-bench")
    duration = 60.0
    results = []
    for i, tool in enumerate(order):
        w = Workload(
            endpoint="completions",
            concurrency=plan.concurrency,
            requests=plan.requests,
            duration_s=round(duration, 1),
            prompt_tokens=plan.prompt_tokens,
            output_tokens=plan.output_tokens,
            model=plan.model,
            seed=int(time.time()) % 100_000 + 17 * i,  # fresh prompts per tool: no prefix-cache hits across tools
        )
        rec, report = run_tool(TOOLS[tool], w, plan.url, out / "bench3" / tool, cores.client, timeout_s=600)
        res = Agreement(tool, wall_s=rec.wall_s)
        if report is None:
            res.status = rec.error
        else:
            a = report.aggregates
            res.reported = {k: v for k, v in asdict(a).items() if k != "source"} | {"source": a.source}
            res.same_def = same_definition(report.requests)
            if tool == "vllm-bench" and res.same_def["requests_ok"]:
                spans = [r.e2e_ms for r in report.requests if r.ok and r.e2e_ms]
                starts = [r.start_mono_s for r in report.requests if r.ok and r.start_mono_s]
                ends = [s + e / 1000.0 for s, e in zip(starts, spans, strict=False)]
                duration = max(ends) - min(starts) if ends else duration
        results.append(res)
        got, same = res.reported, res.same_def
        log(f"  bench3 {tool:<15} {res.status}: {got.get('ttft_ms', math.nan):.1f} ms TTFT, "
            f"{got.get('tpot_ms', math.nan):.2f} ms TPOT, {same.get('output_tok_s', math.nan):.1f} tok/s")  # fmt: skip
    return results


# ------------------------------------------------------------------------------------------------------- smoke
def smoke(tools: list[str], out: Path, cores: Cores, log: Log) -> dict[str, str]:
    """Seconds per tool: 4 streams of 16 tokens on the fake server; a tool passes when its output parses and at
    least one of its requests matches the server's truth."""
    status: dict[str, str] = {}
    w = Workload(
        "completions", concurrency=4, requests=8, duration_s=2.0, prompt_tokens=16, output_tokens=16, model="fake"
    )
    for tool in tools:
        t0 = time.monotonic()
        rec, report, raw = _run_on_fake(tool, w, ["--mode", "staggered"], out / "smoke" / tool, cores, 180)
        truth = parse_events(raw)
        if report is None:
            status[tool] = f"BROKEN: {rec.error}"
        elif not any(r.ok and r.rid in truth for r in report.requests):
            status[tool] = f"BROKEN: no request matched the server's truth ({len(report.requests)} records)"
        else:
            n = sum(r.ok for r in report.requests)
            status[tool] = f"ok: {rec.version}, {n} requests in {time.monotonic() - t0:.1f} s"
        log(f"  smoke {tool:<15} {status[tool]}")
    return status
