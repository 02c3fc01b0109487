"""The peer result parsers (bench/peers/tools) on small samples of real outputs (tests/fixtures/peers), and the
metrics against the fake server's truth. No peer is installed or run here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.peers.common import ClientRequest, ToolReport, WallToMono
from bench.peers.metrics import Capacity, capacity, truth_summary
from bench.peers.tools.aiperf import parse_artifacts
from bench.peers.tools.base import rid_from_response_id
from bench.peers.tools.genai_bench import parse_experiment
from bench.peers.tools.guidellm import parse_benchmarks
from bench.peers.tools.inference_perf import parse_lifecycle
from bench.peers.tools.suite import parse_run_dir
from bench.peers.tools.vllm_bench import parse_result
from bench.peers.truth import TrueRequest, parse_events

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "peers"


def _json(name: str):
    return json.loads((FIX / name).read_text())


def test_rid_from_response_id():
    assert rid_from_response_id("cmpl-000000000042") == 42
    assert rid_from_response_id("chatcmpl-000000000007") == 7
    assert rid_from_response_id("chatcmpl-abc") is None
    assert rid_from_response_id(None) is None


def test_suite_run_folder_matches_the_truth():
    report = parse_run_dir(FIX / "suite-run", WallToMono())
    truth = parse_events(_json("suite-server-events.json"))
    assert report.per_event and len(report.requests) == 2
    for r in report.requests:
        assert r.ok and r.rid in truth
        assert len(r.token_ms) == len(truth[r.rid].token_s) == r.output_tokens
        # the suite's TTFT is a few ms above the server's (loopback + send), never below
        assert 0 <= r.ttft_ms - truth[r.rid].ttft_ms < 20
    assert report.aggregates.ok == 2 and report.aggregates.errors == 0


def test_guidellm_per_request_and_aggregates():
    report = parse_benchmarks(_json("guidellm-benchmarks.json"), WallToMono())
    ok = [r for r in report.requests if r.ok]
    assert len(ok) == 2 and not report.per_event
    assert all(r.rid and r.token_ms is None and r.first_token_mono_s < r.last_token_mono_s for r in ok)
    cancelled = [r for r in report.requests if not r.ok]
    assert cancelled and all(r.cancelled for r in cancelled)
    assert report.aggregates.errors == 0  # incomplete (cancelled at the end) is not an error
    assert report.aggregates.ttft_ms > 0 and report.aggregates.itl_ms > 0


def test_guidellm_spreads_events_between_first_and_last_token():
    r = ClientRequest(first_token_mono_s=10.0, last_token_mono_s=10.3)
    times, exact = r.event_times_mono_s(4)
    assert not exact and times == pytest.approx([10.0, 10.1, 10.2, 10.3])


def test_aiperf_raw_records_keep_every_token_event():
    raw = [json.loads(ln) for ln in (FIX / "aiperf-profile_export_raw.jsonl").read_text().splitlines() if ln]
    report = parse_artifacts(raw, _json("aiperf-profile_export_aiperf.json"))
    assert report.per_event and len(report.requests) == 2
    for r in report.requests:
        assert r.ok and r.rid is not None
        assert len(r.token_ms) == r.output_tokens  # usage chunk and [DONE] are not token events
        assert r.token_ms == sorted(r.token_ms) and r.ttft_ms <= r.token_ms[0] + 1e-9
    assert not math.isnan(report.aggregates.ttft_ms) and report.aggregates.ok > 0


def test_genai_bench_experiment():
    report = parse_experiment(_json("genai-bench-experiment.json"))
    assert len(report.requests) == 2 and not report.per_event
    r = report.requests[0]
    assert r.ok and r.rid and r.start_mono_s is None and r.ttft_ms > 0 and r.e2e_ms > r.ttft_ms
    assert report.aggregates.ttft_ms > 0  # seconds in the file, ms here


def test_inference_perf_lifecycle():
    report = parse_lifecycle(
        _json("inference-perf-per_request_lifecycle_metrics.json"),
        _json("inference-perf-summary_lifecycle_metrics.json"),
    )
    assert report.per_event and len(report.requests) == 2
    r = report.requests[0]
    assert r.ok and r.rid and len(r.token_ms) == r.output_tokens and r.ttft_ms == r.token_ms[0]
    assert report.aggregates.source.startswith("summary_lifecycle_metrics.json")


def test_vllm_bench_detailed_result():
    report = parse_result(_json("vllm-bench-result.json"))
    r = report.requests[0]
    assert r.ok and r.rid and len(r.token_ms) == r.output_tokens
    assert r.token_ms[0] == pytest.approx(r.ttft_ms)
    assert not math.isnan(report.aggregates.tpot_ms)


def _true(rid: int, arrival: float, first: float, n: int, gap: float, **kw) -> TrueRequest:
    return TrueRequest(rid, arrival, None, [first + i * gap for i in range(n)], kw.get("complete", True),
                       kw.get("status", 200), n)  # fmt: skip


def test_capacity_itl_and_ttft_error_against_the_truth():
    truth = {1: _true(1, 100.0, 100.1, 200, 0.02), 2: _true(2, 100.0, 100.1, 200, 0.02)}
    late = [0.0] * 199 + [1.0]  # request 2's last event arrives 1 ms late
    reqs = [
        ClientRequest(rid=rid, ok=True, start_mono_s=100.0, ttft_ms=100.5,
                      token_ms=[100.5 + i * 20.0 + (late[i] if rid == 2 else 0.0) for i in range(200)])
        for rid in (1, 2)
    ]  # fmt: skip
    samples = [(99.0, 0.0, 0.0, 0.0), (105.0, 0.6, 0.3, 1.2)]
    res = capacity(Capacity("x", "staggered", 2), ToolReport(reqs, per_event=True), truth, samples, warmup_s=0.0)
    assert res.status == "ok" and res.matched == 2
    assert res.ttft_err_p50 == pytest.approx(0.5, abs=1e-6)
    assert res.itl_err_p50 == pytest.approx(0.0, abs=1e-6)
    assert 0 < res.itl_err_p999 <= 1.0 + 1e-6
    assert res.client_cpu == pytest.approx(0.1) and res.other_cpu == pytest.approx(0.05)
    assert res.tokens_per_s == pytest.approx(100.0, rel=0.05)  # 2 streams × 50 events/s


def test_truth_summary_counts_failures_and_per_token_tpot():
    truth = {
        1: TrueRequest(1, 0.0, None, [0.1, 0.12, 0.14], True, 200, 12),  # 3 events of 4 tokens
        2: TrueRequest(2, 0.0, None, [], False, 500, 0),
    }
    s = truth_summary(truth)
    assert s.ok == 1 and s.errors == 1
    assert s.ttft_ms == pytest.approx(100.0)
    assert s.itl_ms == pytest.approx(20.0)  # per event
    assert s.tpot_ms == pytest.approx(40.0 / 11)  # per token
