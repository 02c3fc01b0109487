"""The gateway (gateway/) against the fake SSE server: validation, auth, token buckets and Retry-After, streaming
pass-through without buffering (timed against the fake server's own send stamps), keys absent from logs and
metrics, and the command lines' one-line errors."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import Limits as LimitsConfig
from gateway.config import generate_key, hash_key, load_config, parse_config, verify_key
from gateway.limits import KeyLimiter, TokenBucket
from gateway.logs import JsonLog
from gateway.proxy import find_usage
from gateway.testing import FakeClock, make_config, running_gateway, stream_stamped
from vlab.core.errors import ConfigError
from vlab.core.paths import REPO_ROOT
from vlab.testing.fakeserver import fake_sse_server

KEY_A = generate_key()
KEY_B = generate_key()
BAD_KEY = "vgw-definitely-not-a-configured-key-0123456789"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(max_tokens: int | None = 4, content: str = "hello there", **extra: object) -> dict:
    body: dict = {"model": "fake", "messages": [{"role": "user", "content": content}], "stream": True, **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fake SSE server, 2 ms per token, usage.prompt_tokens = the prompt's word count."""
    folder = tmp_path_factory.mktemp("fake")
    with fake_sse_server(folder, "--interval-ms", "2", "--true-prompt-tokens", "--no-uvloop") as url:
        yield url


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.jsonl"


# ------------------------------------------------------------------------------------------- bucket arithmetic
def test_bucket_refills_at_its_rate_and_never_above_capacity() -> None:
    bucket = TokenBucket(capacity=10, rate=2)
    bucket.refill(100.0)
    assert bucket.level == 10
    bucket.level = 3
    bucket.refill(101.5)  # + 2/s × 1.5 s
    assert bucket.level == pytest.approx(6)
    assert bucket.wait_s(7) == pytest.approx(0.5)
    bucket.refill(200.0)
    assert bucket.level == 10
    bucket.refill(150.0)  # a clock step backwards takes nothing and gives nothing
    assert bucket.level == 10


def test_requests_per_s_burst_then_retry_after_is_the_refill_time() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(LimitsConfig(requests_per_s=2, burst_requests=3), clock)
    assert all(limiter.admit(0).admitted for _ in range(3))
    refused = limiter.admit(0)
    assert (refused.admitted, refused.reason) == (False, "requests")
    assert refused.retry_after_s == pytest.approx(0.5)  # (1 − 0) / 2 per s
    assert refused.retry_after_header == "1"  # whole seconds, rounded up, at least 1
    clock.advance(0.5)
    assert limiter.admit(0).admitted
    assert not limiter.admit(0).admitted


def test_tokens_per_min_reserves_then_reconciles_with_usage() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(LimitsConfig(tokens_per_min=600), clock)  # capacity 600, refill 10 tokens/s
    first = limiter.admit(500)
    assert first.admitted and limiter.tokens is not None
    assert limiter.tokens.level == 100
    refused = limiter.admit(300)
    assert (refused.admitted, refused.reason) == (False, "tokens")
    assert refused.retry_after_s == pytest.approx(20.0)  # (300 − 100) / 10
    assert refused.retry_after_header == "20"
    assert first.reservation is not None
    assert first.reservation.settle(120) == 120  # used 120 of 500: 380 come back
    assert limiter.tokens.level == pytest.approx(480)
    assert first.reservation.settle(10) == 120  # settled once only
    assert limiter.admit(300).admitted


def test_usage_above_the_reservation_is_a_debt_and_errors_refund() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(LimitsConfig(tokens_per_min=60), clock)  # 1 token/s
    a = limiter.admit(50)
    assert a.reservation is not None and limiter.tokens is not None
    a.reservation.settle(80)  # the prompt estimate was 30 short
    assert limiter.tokens.level == pytest.approx(-20)
    refused = limiter.admit(5)
    assert refused.retry_after_s == pytest.approx(25.0)
    clock.advance(25)
    b = limiter.admit(5)
    assert b.admitted and b.reservation is not None
    assert limiter.tokens.level == pytest.approx(0)
    b.reservation.refund()
    assert limiter.tokens.level == pytest.approx(5)
    assert b.reservation.charged == 0


def test_a_request_larger_than_the_burst_is_refused_without_retry_after() -> None:
    limiter = KeyLimiter(LimitsConfig(tokens_per_min=100), FakeClock())
    refused = limiter.admit(101)
    assert (refused.admitted, refused.reason, refused.retry_after_header) == (False, "too_large", None)


def test_unlimited_key_always_passes() -> None:
    limiter = KeyLimiter(LimitsConfig(), FakeClock())
    assert all(limiter.admit(10**9).admitted for _ in range(100))


def test_usage_is_found_in_a_stream_tail() -> None:
    tail = b'data: {"choices":[],"usage":{"prompt_tokens":31,"total_tokens":36,"completion_tokens":5}}\n\ndata: [DONE]'
    usage = find_usage(tail)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total) == (31, 5, 36)
    assert find_usage(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n') is None


# -------------------------------------------------------------------------------------------------- config
def test_key_hash_round_trip_and_salt() -> None:
    stored = hash_key(KEY_A)
    assert stored.startswith("sha256:") and KEY_A not in stored
    assert verify_key(KEY_A, stored)
    assert not verify_key(KEY_B, stored)
    assert hash_key(KEY_A) != stored  # a fresh salt each time


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstream: ftp://x\nkeys: [{id: a, hash: HASH}]\n", "upstream: expected http://host:port"),
        ("upstream: http://h:1/v1\nkeys: [{id: a, hash: HASH}]\n", "expected a base URL without a path"),
        ("upstream: http://h:1\nkeys: [{id: a, hash: sha256:xx:yy}]\n", "keys[0].hash: expected 'sha256:"),
        ("upstream: http://h:1\nkeys: [{id: a, hash: HASH}]\nlisten: {port: 70000}\n", "listen.port:"),
        ("upstream: http://h:1\nkeys: [{id: a, hash: HASH}]\nlimit: {}\n", "limit: unknown key"),
        ("upstream: http://h:1\nkeys: [{id: a, hash: HASH}, {id: a, hash: HASH}]\n", "key id 'a' appears twice"),
        ("upstream: http://h:1\nkeys: []\n", "keys: List should have at least 1 item"),
        ("upstream: http://h:1\nkeys: [{id: a, hash: HASH}]\ndefaults: {requests_per_s: '5'}\n",
         "defaults.requests_per_s: Input should be a valid number"),
        ("upstream: [\n", "YAML syntax error"),
    ],
)  # fmt: skip
def test_bad_configs_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(text.replace("HASH", hash_key(KEY_A)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_the_example_config_is_valid() -> None:
    config = load_config(REPO_ROOT / "gateway" / "example.yaml")
    assert [k.id for k in config.keys] == ["polite", "greedy"]
    assert verify_key("vgw-example-polite-NOT-A-SECRET", config.keys[0].hash)


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, input=stdin, timeout=60
    )


def test_cli_user_mistakes_are_one_line_and_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: http://127.0.0.1:1\nkeys: [{id: a, hash: nope}]\n")
    for args, code in [
        (("gateway", "--config", str(bad)), 2),
        (("gateway", "--config", str(tmp_path / "missing.yaml")), 2),
        (("gateway", "--config", "gateway/example.yaml", "--upstream", "not a url"), 2),
        (("gateway", "--config", "gateway/example.yaml", "--upstream", "http://127.0.0.1:1"), 1),  # nothing there
        (("vlab", "gateway", "--config", "gateway/example.yaml", "--upstream", "http://127.0.0.1:1"), 1),
    ]:
        out = _run_cli(*args)
        assert out.returncode == code, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
        assert "error:" in out.stderr


def test_hash_key_cli_reads_stdin_and_generates() -> None:
    out = _run_cli("gateway", "hash-key", stdin="vgw-some-key\n")
    assert out.returncode == 0 and verify_key("vgw-some-key", out.stdout.strip())
    out = _run_cli("gateway", "hash-key", "--generate")
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines())
    key, stored = lines["key"].split()[0], lines["hash"].strip()
    assert verify_key(key, stored)


# ------------------------------------------------------------------------------------------ auth, validation
@pytest.fixture
def gw(fake: str, log_path: Path) -> Iterator:
    config = make_config(
        fake, {"a": KEY_A, "b": KEY_B},
        validation={"max_tokens": 64, "max_prompt_tokens": 100, "chars_per_token": 4.0},
    )  # fmt: skip
    log = JsonLog(log_path)
    with running_gateway(config, log=log) as running:
        yield running
    log.close()


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_auth_missing_and_wrong_key_are_401(gw) -> None:
    with httpx.Client(base_url=gw.url) as client:
        r = client.post("/v1/chat/completions", json=chat())
        assert r.status_code == 401 and _error(r)["code"] == "missing_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        r = client.post("/v1/chat/completions", json=chat(), headers=auth(BAD_KEY))
        assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
        r = client.post("/v1/chat/completions", json=chat(), headers={"Authorization": KEY_A})  # no scheme
        assert r.status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=auth(KEY_B)).json()["data"][0]["id"] == "fake"
        r = client.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A))
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model", "invalid_value"),
        (json.dumps(chat(stream="yes")).encode(), 400, "stream", "invalid_value"),
        (json.dumps(chat(max_tokens=0)).encode(), 400, "max_tokens", "invalid_value"),
        (json.dumps(chat(max_tokens=65)).encode(), 400, "max_tokens", "max_tokens_exceeded"),
        (json.dumps({**chat(None), "max_completion_tokens": 100}).encode(), 400, "max_completion_tokens",
         "max_tokens_exceeded"),
        (json.dumps(chat(content="word " * 100)).encode(), 400, "messages", "context_length_exceeded"),
        (json.dumps({**chat(), "messages": []}).encode(), 400, "messages", "invalid_value"),
        (json.dumps({**chat(), "messages": [{"role": "robot", "content": "x"}]}).encode(), 400,
         "messages[0].role", "invalid_value"),
    ],
)  # fmt: skip
def test_validation_errors_are_openai_shaped(gw, body: bytes, status: int, param: str | None, code: str) -> None:
    r = httpx.post(gw.url + "/v1/chat/completions", content=body, headers=auth(KEY_A))
    assert r.status_code == status, r.text
    error = _error(r)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_completions_validation_and_token_id_prompts(gw) -> None:
    url = gw.url + "/v1/completions"
    r = httpx.post(url, json={"model": "fake", "prompt": list(range(101)), "max_tokens": 2, "stream": True},
                   headers=auth(KEY_A))  # fmt: skip
    assert r.status_code == 400 and _error(r)["code"] == "context_length_exceeded"
    r = httpx.post(url, json={"model": "fake", "prompt": list(range(100)), "max_tokens": 2, "stream": True},
                   headers=auth(KEY_A))  # fmt: skip
    assert r.status_code == 200
    r = httpx.post(url, json={"model": "fake", "prompt": 5, "stream": True}, headers=auth(KEY_A))
    assert r.status_code == 400 and _error(r)["param"] == "prompt"


def test_the_max_tokens_cap_is_inserted_when_a_request_sets_none(gw) -> None:
    r = httpx.post(gw.url + "/v1/completions", json={"model": "fake", "prompt": "a b c", "stream": True},
                   headers=auth(KEY_A))  # fmt: skip
    events = [e for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert len(events) == 64  # the fake server honours max_tokens: the cap (64) was sent


def test_upstream_status_and_error_body_pass_through(gw, fake: str) -> None:
    body = {**chat(), "stream": False}  # the fake server only streams: it answers 400 with its own body
    direct = httpx.post(fake + "/v1/chat/completions", json=body)
    through = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=auth(KEY_A))
    assert (through.status_code, through.content) == (direct.status_code, direct.content) == (400, direct.content)


def test_upstream_unreachable_is_502(fake: str) -> None:
    from vlab.client.http import find_free_port

    config = make_config(f"http://127.0.0.1:{find_free_port()}", {"a": KEY_A})
    with running_gateway(config, log=JsonLog(None)) as running:
        r = httpx.post(running.url + "/v1/chat/completions", json=chat(), headers=auth(KEY_A))
        assert r.status_code == 502 and _error(r)["code"] == "upstream_unreachable"
        assert httpx.get(running.url + "/health").status_code == 503


def test_unknown_route_is_an_openai_404(gw) -> None:
    r = httpx.get(gw.url + "/v1/nothing")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"


# ---------------------------------------------------------------------------------------------- rate limits
def test_429_with_retry_after_then_admitted_after_the_wait(fake: str, log_path: Path) -> None:
    clock = FakeClock()
    config = make_config(fake, {"a": KEY_A, "b": KEY_B}, key_limits={"a": {"requests_per_s": 0.5, "burst_requests": 2}})
    with (
        running_gateway(config, clock=clock, log=JsonLog(log_path)) as running,
        httpx.Client(base_url=running.url) as c,
    ):
        for _ in range(2):
            assert c.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A)).status_code == 200
        r = c.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"  # (1 − 0) / 0.5 per s
        assert r.headers["x-ratelimit-limit-requests"] == "0.5/s"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        error = _error(r)
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert c.post("/v1/chat/completions", json=chat(), headers=auth(KEY_B)).status_code == 200  # other key
        clock.advance(1.9)
        assert c.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A)).status_code == 429
        clock.advance(0.1)
        assert c.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A)).status_code == 200
        metrics = c.get("/metrics").text
    assert 'gateway_rejected_total{key_id="a",reason="rate_requests"} 2.0' in metrics
    assert 'gateway_requests_total{key_id="a",route="chat",status="429"} 2.0' in metrics


def test_tokens_per_min_429_and_reconciliation_with_usage(fake: str, log_path: Path) -> None:
    clock = FakeClock()
    config = make_config(
        fake, {"a": KEY_A}, key_limits={"a": {"tokens_per_min": 120}}, validation={"chars_per_token": 4.0}
    )  # 2 tokens/s refill, burst 120
    with running_gateway(config, clock=clock, log=JsonLog(log_path)) as running:
        bucket = running.gateway.limiters["a"].tokens
        assert bucket is not None
        url = running.url + "/v1/completions"
        prompt = "one two three four five"  # 23 characters: estimate ceil(23 / 4) = 6; the fake's usage says 5
        body = {"model": "fake", "prompt": prompt, "max_tokens": 50, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        r = httpx.post(url, json=body, headers=auth(KEY_A))
        assert r.status_code == 200
        # reserved 6 + 50 = 56 at admission; charged usage 5 + 50 = 55: one comes back
        assert bucket.level == pytest.approx(120 - 55)
        r = httpx.post(url, json={**body, "max_tokens": 64}, headers=auth(KEY_A))  # needs 70, holds 65
        assert r.status_code == 429 and _error(r)["type"] == "tokens"
        assert r.headers["retry-after"] == "3"  # (70 − 65) / 2 = 2.5 s, rounded up
        big = httpx.post(url, json={**body, "max_tokens": 200}, headers=auth(KEY_A))
        assert big.status_code == 429 and "retry-after" not in big.headers
        assert _error(big)["code"] == "request_too_large"
        no_usage = {k: v for k, v in body.items() if k != "stream_options"}
        clock.advance(30)  # full again
        assert httpx.post(url, json=no_usage, headers=auth(KEY_A)).status_code == 200
        assert bucket.level == pytest.approx(120 - 56)  # no usage: the reservation stands
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    charged = [rec.get("tokens_charged") for rec in lines if rec.get("status") == 200]
    assert charged == [55, 56]


# ---------------------------------------------------------------------------------------------- pass-through
def _latencies(stream, sent_ns: list[int]) -> list[float]:
    """Per token event: client arrival − the fake server's send, ms (one clock: CLOCK_MONOTONIC)."""
    assert len(stream.event_ns) >= len(sent_ns)
    return [(stream.event_ns[i] - sent_ns[i]) / 1e6 for i in range(len(sent_ns))]


def test_streaming_is_not_buffered(tmp_path: Path) -> None:
    """Per-token arrival through the gateway within 1 ms of the direct path (medians), against the fake server's
    true send stamps; no token held back for a token interval (20 ms) more often than on the direct path."""
    interval_ms, tokens = 20.0, 25
    with fake_sse_server(tmp_path, "--interval-ms", str(interval_ms), "--no-uvloop") as fake_url:
        config = make_config(fake_url, {"a": KEY_A})
        with running_gateway(config, log=JsonLog(tmp_path / "gw.jsonl")) as running:
            body = json.dumps({"model": "fake", "prompt": "x", "max_tokens": tokens, "stream": True,
                               "stream_options": {"include_usage": True}}).encode()  # fmt: skip
            runs: dict[str, list[tuple[int, object]]] = {"direct": [], "gateway": []}
            for _ in range(6):  # alternate, so both paths see the same machine load
                for name, url, headers in (("direct", fake_url, {}), ("gateway", running.url, auth(KEY_A))):
                    stream = stream_stamped(url, "/v1/completions", body, headers)
                    assert stream.status == 200
                    rid = json.loads(stream.body.split(b'"usage":')[1].split(b"}")[0] + b"}")["prompt_tokens"]
                    runs[name].append((rid, stream))
            events = httpx.get(fake_url + "/events").json()["requests"]
    sent = {r["rid"]: r["token_ns"] for r in events}
    lat = {name: [x for rid, s in runs[name] for x in _latencies(s, sent[rid])] for name in runs}
    med = {name: statistics.median(v) for name, v in lat.items()}
    assert med["gateway"] - med["direct"] <= 1.0, med
    held = {name: sum(x >= interval_ms for x in v) / len(v) for name, v in lat.items()}
    assert held["gateway"] <= held["direct"] + 0.05, held
    # every token event reached the client in a read of its own, as the server sent them (not batched)
    reads = [s.reads for _, s in runs["gateway"]]
    assert statistics.median(reads) >= tokens


def test_client_disconnect_mid_stream_closes_upstream(tmp_path: Path) -> None:
    import socket

    with fake_sse_server(tmp_path, "--interval-ms", "50", "--no-uvloop") as fake_url:
        log_path = tmp_path / "gw.jsonl"
        with running_gateway(make_config(fake_url, {"a": KEY_A}), log=JsonLog(log_path)) as running:
            host, port = running.url.removeprefix("http://").split(":")
            body = json.dumps({"model": "fake", "prompt": "x", "max_tokens": 100, "stream": True}).encode()
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                         % (KEY_A.encode(), len(body), body))  # fmt: skip
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()
            registry = running.gateway.metrics.registry
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and registry.get_sample_value("gateway_in_flight") != 0:
                time.sleep(0.05)
            assert registry.get_sample_value("gateway_in_flight") == 0
        time.sleep(0.2)
        events = httpx.get(fake_url + "/events").json()["requests"]
    assert events and not events[0]["complete"]  # the fake server saw the stream closed early
    record = next(json.loads(x) for x in log_path.read_text().splitlines() if '"event":"request"' in x)
    assert (record["status"], record["outcome"]) == (499, "client_disconnected")


# ------------------------------------------------------------------------------------------ secrets stay out
def test_keys_never_appear_in_logs_or_metrics(gw, log_path: Path) -> None:
    with httpx.Client(base_url=gw.url) as client:
        client.post("/v1/chat/completions", json=chat(), headers=auth(KEY_A))
        client.post("/v1/chat/completions", json=chat(), headers=auth(BAD_KEY))
        client.post("/v1/chat/completions", json=chat(max_tokens=1000), headers=auth(KEY_B))
        client.get("/v1/models", headers=auth(KEY_B))
        metrics = client.get("/metrics").text
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {rec.get("key_id") for rec in lines if rec["event"] == "request"} == {"a", "b", "-"}
    for secret in (KEY_A, KEY_B, BAD_KEY, KEY_A[4:20], BAD_KEY[4:20]):
        assert secret not in text and secret not in metrics
    assert 'key_id="a"' in metrics and "gateway_in_flight 0.0" in metrics


# ---------------------------------------------------------------------------------------- the suite through it
def test_the_suite_records_gateway_429s_with_their_status(fake: str, tmp_path: Path) -> None:
    """What the suite sees of a rate-limited key: `status=429` on each refused request (the fairness analysis in
    vlab/commands/gateway_experiment.py counts these from the status column), and the key in no file of the run."""
    import pandas as pd

    from vlab.commands.sweep import run_locust
    from vlab.core.scenario import load_scenario

    config = make_config(fake, {"a": KEY_A}, key_limits={"a": {"requests_per_s": 2, "burst_requests": 2}})
    scenario = tmp_path / "limited.yaml"
    scenario.write_text(
        "name: gw-limited\napi: {endpoint: completions, api_key_env: VLAB_TEST_GW_KEY, metrics_interval_s: 0}\n"
        "load: {stages: [{rate: 8, duration: 3s}]}\ndata: {prompt_tokens: 8, output_tokens: 4}\n"
    )
    os.environ["VLAB_TEST_GW_KEY"] = KEY_A
    try:
        with running_gateway(config, log=JsonLog(tmp_path / "gw.jsonl")) as running:
            run_locust(load_scenario(scenario), scenario, tmp_path / "run", host=running.url)
    finally:
        del os.environ["VLAB_TEST_GW_KEY"]
    requests = pd.read_csv(tmp_path / "run" / "requests.csv", keep_default_na=False)
    limited = requests[requests.status == 429]
    # today `http`; `rate_limited` once the suite separates quota refusals from server failures (docs/gateway.md)
    assert len(limited) > 0 and limited.error_kind.isin(["http", "rate_limited"]).all()
    assert ((requests.status == 200) == (requests.ok == 1)).all()
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert KEY_A not in path.read_text(errors="replace"), path


# ------------------------------------------------------------------------------------------- vlab gateway
def test_vlab_gateway_starts_and_stops_on_sigterm(fake: str, tmp_path: Path) -> None:
    from vlab.client.http import find_free_port, http_get

    port = find_free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(f"upstream: http://127.0.0.1:1\nkeys: [{{id: a, hash: '{hash_key(KEY_A)}'}}]\n"
                      f"log: {{path: {tmp_path / 'gw.jsonl'}}}\n")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlab", "gateway", "--config", str(config), "--upstream", fake, "--port", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        assert http_get(f"http://127.0.0.1:{port}/health")[0] == 200
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        assert http_get(f"http://127.0.0.1:{port}/health")[0] == 0  # the gateway is gone too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert '"event":"stop"' in (tmp_path / "gw.jsonl").read_text()


def test_parse_config_is_strict_about_types() -> None:
    with pytest.raises(ConfigError, match="keys"):
        parse_config({"upstream": "http://h:1"}, "x")
