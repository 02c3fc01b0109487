"""The benchmark's fake SSE server (vlab/testing/fake_sse_server.py) speaks vLLM's streaming format, and its lockstep
mode really sends every open stream's token on the same tick. Each test starts the server in its own process (group) and
stops it by pid."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from itertools import pairwise
from pathlib import Path

import pytest

from vlab.client.sse import parse_stream
from vlab.client.stream import StreamConnection
from vlab.testing.fakeserver import fake_sse_server


def fake_server(tmp_path: Path, *args: str):
    """Start the fake server on a free port; yield its base URL; stop it by its process group."""
    return fake_sse_server(tmp_path, *args, timeout_s=15)


def _body(chat: bool, max_tokens: int, usage: bool = True) -> bytes:
    body: dict = {"model": "fake", "max_tokens": max_tokens, "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    if chat:
        body["messages"] = [{"role": "user", "content": "one two three"}]
    else:
        body["prompt"] = "one two three"
    return json.dumps(body).encode()


def _events(url: str) -> dict[int, dict]:
    with urllib.request.urlopen(url + "/events", timeout=10) as resp:
        return {r["rid"]: r for r in json.loads(resp.read())["requests"]}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_streams_vllm_format(tmp_path: Path, endpoint: str) -> None:
    chat = endpoint == "chat"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with fake_server(tmp_path, "--mode", "staggered", "--interval-ms", "2") as url:
        conn = StreamConnection(url)
        raw = conn.post(path, _body(chat, 12))
        result = parse_stream(raw, want_text=True)
        assert raw.status == 200 and raw.chunked and raw.complete
        assert result.ok, result.error
        assert result.done
        assert len(result.token_stamps) == 12
        assert result.completion_tokens == 12
        assert result.prompt_tokens == 1  # the server's request id (see the module docstring of the server)
        assert result.finish_reason == "length"
        assert len(result.text.split()) == 12
        payload = b"".join(raw.reads)
        assert payload.count(b'"role":"assistant"') == (1 if chat else 0)
        if chat:  # the role chunk is the first choice event, before (not counted as) a token event
            assert result.first_choice_stamp is not None and result.first_choice_stamp <= result.token_stamps[0]
        else:
            assert result.first_choice_stamp == result.token_stamps[0]
        # keep-alive: a second request on the same connection, without the usage chunk
        second = parse_stream(conn.post(path, _body(chat, 3, usage=False)))
        assert second.ok and len(second.token_stamps) == 3 and second.completion_tokens == -1
        conn.close()
        log = _events(url)
    assert sorted(log) == [1, 2]
    assert len(log[1]["token_ns"]) == 12 and log[1]["complete"]
    gaps_ms = [(b - a) / 1e6 for a, b in pairwise(log[1]["token_ns"])]
    assert statistics.median(gaps_ms) > 1.0  # paced at 2 ms, not sent in one burst (median: the VM is noisy)


def test_models_tokenize_health(tmp_path: Path) -> None:
    with fake_server(tmp_path) as url:
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as resp:
            models = json.loads(resp.read())
        assert models["data"][0]["id"] == "fake" and models["data"][0]["max_model_len"] == 4096
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert resp.status == 200
        req = urllib.request.Request(
            url + "/tokenize", data=json.dumps({"prompt": "a b\nc", "return_token_strs": True}).encode()
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            tok = json.loads(resp.read())
        assert tok["count"] == 3 and tok["token_strs"] == ["a", "Ġb", "Ċ", "c"]


def _send_times(tmp_path: Path, mode: str) -> list[list[int]]:
    """Four streams started 0, 13, 27 and 38 ms apart; each stream's token send stamps (ns)."""
    with fake_server(tmp_path, "--mode", mode, "--interval-ms", "50") as url:
        threads = []
        for delay in (0.0, 0.013, 0.027, 0.038):

            def one(delay: float = delay) -> None:
                time.sleep(delay)
                conn = StreamConnection(url)
                assert parse_stream(conn.post("/v1/completions", _body(False, 6))).ok
                conn.close()

            threads.append(threading.Thread(target=one))
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        log = _events(url)
    assert len(log) == 4
    return [r["token_ns"] for r in log.values()]


def _stamp_gaps_ms(streams: list[list[int]]) -> list[float]:
    stamps = sorted(t for s in streams for t in s)
    return [(b - a) / 1e6 for a, b in pairwise(stamps)]


def test_lockstep_ticks_together(tmp_path: Path) -> None:
    gaps = _stamp_gaps_ms(_send_times(tmp_path, "lockstep"))
    # Sent on a shared tick: consecutive send stamps are either in the same tick (µs apart) or a tick apart.
    assert all(g < 3.0 or g > 40.0 for g in gaps), gaps
    # 6 tokens per stream: ≥ 6 ticks (7 or more when the streams' starts fall in different ticks, which a busy machine
    # can fold into one: the threads' start offsets are only 13–38 ms apart).
    assert sum(g > 40.0 for g in gaps) >= 5


def test_staggered_keeps_own_timers(tmp_path: Path) -> None:
    gaps = _stamp_gaps_ms(_send_times(tmp_path, "staggered"))
    assert any(5.0 < g < 40.0 for g in gaps), gaps  # streams keep their own phase (the test above discriminates)
