"""Faults during a run, each reproduced against real vLLM traffic through `vlab.testing.faultproxy`: the request is
recorded with its category, Locust keeps running, and every completed request stays on disk."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from vlab.commands.runner import run_locust
from vlab.core.errors import UserError
from vlab.core.runfolder import REQUESTS_CSV, read_run_json
from vlab.core.scenario import load_scenario
from vlab.testing.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.e2e

SHORT = "load: {users: 2, duration: 10s}\ndata: {prompt_tokens: 40, output_tokens: 8}\n"


@pytest.fixture(scope="module")
def proxy(vllm_base_url: str) -> Iterator[FaultProxy]:
    p = FaultProxy(vllm_base_url).start()
    yield p
    p.stop()


def run_with(tmp_path: Path, host: str, body: str = SHORT, api: str = "") -> tuple[pd.DataFrame, int, Path]:
    scenario = tmp_path / "fault.yaml"
    scenario.write_text(f"name: fault\n{api}{body}")
    run_dir = tmp_path / "run"
    code = run_locust(load_scenario(scenario), scenario, run_dir, host=host)
    return pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""]), code, run_dir


def locust_ok_count(run_dir: Path) -> int:
    """Successful requests in Locust's own final stats (one POST event per request)."""
    with (run_dir / "locust_stats.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["Type"] == "POST"]
    return sum(int(r["Request Count"]) - int(r["Failure Count"]) for r in rows)


def assert_survived(requests: pd.DataFrame, run_dir: Path, status: str = "completed") -> None:
    """The run went on to its end with the status that matches it, and every request Locust saw succeed is on
    disk: Locust's final stats are written after the last record is finished, so the counts are equal."""
    assert read_run_json(run_dir)["status"] == status
    assert int((requests.ok == 1).sum()) == locust_ok_count(run_dir)


@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        (Fault("cut", after_events=4), "stream_cut", "closed mid-stream"),
        (Fault("bad_line", after_events=2), "malformed", "non-JSON data line"),
        (Fault("missing_choices", after_events=2), "malformed", "event without choices"),
        (Fault("no_done"), "no_done", "without data: [DONE]"),
        (Fault("status", status=429), "rate_limited", "HTTP 429: Too many requests"),
        (Fault("status", status=500), "http", "HTTP 500: Internal server error"),
        (Fault("status", status=503), "http", "HTTP 503: Service unavailable"),
        (Fault("model"), "http", "HTTP 404"),
    ],
    ids=lambda v: v.kind + (str(v.status) if v.kind == "status" else "") if isinstance(v, Fault) else None,
)
def test_fault_is_recorded_with_its_category(
    proxy: FaultProxy, tmp_path: Path, fault: Fault, kind: str, message: str
) -> None:
    # Every third request: the healthy ones stay the majority, so the run completes (more than half failed would be a
    # failed run, and with every other request the closed-loop back-off after errors can tip the share either way).
    every_third = Fault(fault.kind, fault.after_events, fault.status, fault.delay_s, every=3)
    with proxy.injecting(every_third):
        requests, code, run_dir = run_with(tmp_path, proxy.base_url)
    failed = requests[requests.ok == 0]
    failed = failed[failed.error_kind != "cut_off"]
    assert len(failed) >= 2 and (failed.error_kind == kind).all(), failed[["error_kind", "error"]]
    assert failed.error.str.contains(message, regex=False).all(), failed.error.tolist()
    assert (requests.ok == 1).sum() >= 2  # the healthy requests kept flowing
    # Locust's convention (--exit-code-on-error 1) when some requests failed; a 429 is load refused, not a failure
    assert code == (0 if kind == "rate_limited" else 1)
    assert_survived(requests, run_dir)


def test_every_request_names_its_record_to_the_server(vllm_base_url: str, tmp_path: Path) -> None:
    # X-Request-Id = the record's request_id: the proxy's lists (what it received, what it relayed to [DONE]) are the
    # records on disk, id for id — the soak's exactly-once check (bench/soak_faults.py) rests on this.
    fresh = FaultProxy(vllm_base_url).start()
    try:
        with fresh.injecting(Fault("cut", after_events=3, every=3)):
            requests, _, _ = run_with(tmp_path, fresh.base_url, "load: {users: 2, duration: 5s}\n"
                                      "data: {prompt_tokens: 40, output_tokens: 8}\n")  # fmt: skip
    finally:
        fresh.stop()
    assert requests.request_id.is_unique
    assert sorted(fresh.received_ids) == sorted(requests.request_id)
    assert sorted(fresh.completed_ids) == sorted(requests[requests.ok == 1].request_id)
    assert (requests.error_kind == "stream_cut").any()


def test_stalled_stream_hits_the_read_timeout(proxy: FaultProxy, tmp_path: Path) -> None:
    # The 8 s stall comes after the role chunk and the first token; 3 s of silence is a read timeout, long enough that
    # a slow prefill on a busy machine is not one, short enough to catch the stall. Every third request: with every
    # other one, half the requests fail and a busy machine's cut-offs at the end tip the run to `failed` (> half).
    with proxy.injecting(Fault("stall", after_events=2, delay_s=8.0, every=3)):
        requests, _, run_dir = run_with(
            tmp_path, proxy.base_url, api="api: {read_timeout_s: 3, connect_timeout_s: 2}\n"
        )
    stalled = requests[requests.error_kind == "read_timeout"]
    assert len(stalled) >= 1 and stalled.error.str.contains("timed out").all()
    assert (stalled.n_events >= 1).any()  # what arrived before the stall is kept …
    tokens = pd.read_csv(run_dir / "tokens.csv")
    kept = tokens[tokens.request_id.isin(stalled.request_id)].groupby("request_id").size()
    assert (kept.reindex(stalled.request_id, fill_value=0).to_numpy() == stalled.n_events.to_numpy()).all()  # … all
    assert_survived(requests, run_dir)


def test_several_tokens_in_one_event_are_flagged(proxy: FaultProxy, tmp_path: Path) -> None:
    with proxy.injecting(Fault("merge")):
        requests, code, _ = run_with(tmp_path, proxy.base_url)
    ok = requests[requests.ok == 1]
    assert code == 0 and len(ok) >= 2
    assert ok.multi_token.all() and (ok.completion_tokens > ok.n_events).all()
    # TPOT counts tokens from usage, so it stays the per-token figure; the event mean is larger.
    assert (ok.tpot_ms < ok.itl_mean_ms).all()


def test_stream_without_usage_chunk_counts_events(proxy: FaultProxy, tmp_path: Path) -> None:
    with proxy.injecting(Fault("no_usage")):
        requests, code, _ = run_with(tmp_path, proxy.base_url)
    ok = requests[requests.ok == 1]
    assert code == 0 and len(ok) >= 2
    assert (ok.completion_tokens == -1).all() and (ok.n_events == 8).all() and ok.tpot_ms.notna().all()


def test_server_killed_mid_run(vllm_base_url: str, tmp_path: Path) -> None:
    doomed = FaultProxy(vllm_base_url).start()
    doomed.fault = Fault("delay", delay_s=0.02)  # slower streams, so some are surely mid-token when it dies

    def kill_after_two_streams() -> None:
        while doomed.completed_streams < 2:
            time.sleep(0.05)
        time.sleep(0.3)  # both users are now inside a new stream
        doomed.stop()

    threading.Thread(target=kill_after_two_streams, daemon=True).start()
    try:
        requests, code, run_dir = run_with(
            tmp_path, doomed.base_url, "load: {users: 2, duration: 15s}\ndata: {prompt_tokens: 40, output_tokens: 16}\n"
        )
    finally:
        doomed.stop()
    kinds = set(requests.error_kind.fillna(""))
    assert "stream_cut" in kinds  # streams cut mid-token
    assert "connect" in kinds  # and the server stays down: connection refused afterwards
    assert (requests.error_kind == "connect").sum() <= 2 * 15 / 0.5 + 2  # 2 users back off 0.5 s, not spin
    assert (requests.ok == 1).sum() >= 2 and code == 1
    assert_survived(requests, run_dir, status="failed")  # most requests could not connect: the run says so
    assert "unreachable" in read_run_json(run_dir)["status_reason"]


def test_hung_server_run_still_ends_on_time(proxy: FaultProxy, tmp_path: Path) -> None:
    started = time.time()
    with proxy.injecting(Fault("delay", delay_s=1.5)):
        requests, _, run_dir = run_with(
            tmp_path, proxy.base_url, "load: {users: 2, duration: 5s, drain_timeout_s: 2}\n"
        )
    # Locust start-up + the 5 s level + its 2 s drain, not the hung streams' 190 s
    assert time.time() - started < 5 + 2 + 15
    cut = requests[requests.error_kind == "cut_off"]
    assert len(cut) == 2 and (cut.ok == 0).all()  # both in-flight requests recorded as cut off
    meta = read_run_json(run_dir)  # nothing was measured: the run says so, and why
    assert meta["status"] == "failed" and "no request ended" in meta["status_reason"]
    assert "did not drain within 2 s" in meta["status_reason"]


def test_prompt_longer_than_the_context_is_a_real_400(vllm_base_url: str, tmp_path: Path) -> None:
    dataset = tmp_path / "long.jsonl"
    dataset.write_text(json.dumps({"prompt": "word " * 3000}) + "\n")
    requests, code, _run_dir = run_with(
        tmp_path, vllm_base_url, f"load: {{users: 1, duration: 3s}}\ndata: {{dataset: {{path: {dataset}}}}}\n"
    )
    answered = requests[requests.error_kind != "cut_off"]  # the one in flight when the run stopped, if any
    assert code == 1 and len(answered) >= 1 and len(requests) - len(answered) <= 1
    assert (answered.status == 400).all() and (answered.error_kind == "http").all()
    assert answered.error.str.contains("context length").all(), answered.error.tolist()[:1]


def test_server_not_up_at_start_is_one_line_before_any_load(tmp_path: Path) -> None:
    from vlab.client.http import find_free_port

    with pytest.raises(UserError, match=r"cannot reach the server at http://127.0.0.1:\d+/v1/models"):
        run_with(tmp_path, f"http://127.0.0.1:{find_free_port()}")
    assert not (tmp_path / "run" / REQUESTS_CSV).exists() or len(pd.read_csv(tmp_path / "run" / REQUESTS_CSV)) == 0


def test_unknown_model_is_refused_before_any_load(vllm_base_url: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"model 'nope' is not served at .* \(it serves: smollm2\)"):
        run_with(tmp_path, vllm_base_url, api="api: {model: nope}\n")
