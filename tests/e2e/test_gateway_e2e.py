"""End to end through the gateway to the real local vLLM: a stream relayed whole, the usage reconciled in the key's
bucket, vLLM's own errors passed on, and a suite run through it with the key nowhere on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from gateway.config import generate_key
from gateway.logs import JsonLog
from gateway.testing import FakeClock, RunningGateway, make_config, running_gateway

pytestmark = pytest.mark.e2e

KEY = generate_key()
KEY_ENV = "VLAB_TEST_GATEWAY_KEY"


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway") / "gateway.jsonl"


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def gw(vllm_base_url: str, log_path: Path, clock: FakeClock) -> Iterator[RunningGateway]:
    config = make_config(
        vllm_base_url, {"e2e": KEY}, key_limits={"e2e": {"tokens_per_min": 10**9}},
        validation={"max_tokens": 256, "max_prompt_tokens": 1800},
    )  # fmt: skip
    log = JsonLog(log_path)
    with running_gateway(config, clock=clock, log=log) as running:
        yield running
    log.close()


def test_a_stream_is_relayed_whole_and_usage_reconciled(gw: RunningGateway) -> None:
    bucket = gw.gateway.limiters["e2e"].tokens
    assert bucket is not None
    before = bucket.level
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 12,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}  # fmt: skip
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] == 12  # ignore_eos: a vLLM extension field passed through untouched
    assert before - bucket.level == pytest.approx(usage["prompt_tokens"] + usage["completion_tokens"])


def test_vllm_errors_pass_through_and_limits_hold_before_vllm(gw: RunningGateway, vllm_base_url: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    direct = httpx.post(vllm_base_url + "/v1/chat/completions", json=body, timeout=30)
    through = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert through.status_code == direct.status_code == 404
    assert through.json()["error"]["message"] == direct.json()["error"]["message"]
    over = httpx.post(gw.url + "/v1/chat/completions", json={**body, "model": "smollm2", "max_tokens": 257},
                      headers=headers, timeout=30)  # fmt: skip
    assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"


def test_the_suite_runs_through_the_gateway_and_the_key_stays_off_disk(
    gw: RunningGateway, log_path: Path, tmp_path: Path
) -> None:
    from analysis.report import build_report
    from vlab.commands.sweep import run_locust
    from vlab.core.scenario import load_scenario

    scenario = tmp_path / "through-gateway.yaml"
    scenario.write_text(
        f"name: e2e-gateway\napi: {{endpoint: chat, api_key_env: {KEY_ENV}}}\nload: {{users: 2, duration: 6s}}\n"
        "data: {prompt_tokens: 48, output_tokens: 12}\n"
    )
    run_dir = tmp_path / "run"
    os.environ[KEY_ENV] = KEY
    try:
        code = run_locust(load_scenario(scenario), scenario, run_dir, host=gw.url)
    finally:
        del os.environ[KEY_ENV]
    assert code == 0, (run_dir / "locust.log").read_text()[-2000:]
    build_report([run_dir], run_dir / "index.html")
    requests = pd.read_csv(run_dir / "requests.csv", keep_default_na=False, na_values=[""])
    requests = requests[requests.error_kind != "cut_off"]  # in flight when the run stopped
    assert len(requests) >= 2 and (requests.ok == 1).all(), requests[["status", "error_kind", "error"]]
    # the suite's exact prompts went through the gateway's /tokenize; lengths held
    assert (requests.prompt_tokens == requests.prompt_tokens_requested).all()
    assert (requests.completion_tokens == 12).all()
    files = [p for p in run_dir.rglob("*") if p.is_file()] + [log_path]
    assert any(p.name == "index.html" for p in files)
    for path in files:
        assert KEY not in path.read_text(errors="replace"), path
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert sum(1 for x in lines if x.get("path") == "/v1/chat/completions" and x["status"] == 200) >= len(requests)
