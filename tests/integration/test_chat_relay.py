"""The chat page's relay (`vlab.locust.chat`) in a real Locust web UI, against the fake SSE server: it streams
without buffering, passes the host's models through, and reports a host without /metrics in one line."""

from __future__ import annotations

import http.client
import itertools
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.locust_ui import get_json, locust_ui
from vlab.testing.fakeserver import fake_sse_server

INTERVAL_MS, TOKENS = 150.0, 8


def _stream(base: str, body: dict) -> tuple[int, list[tuple[float, bytes]]]:
    """POST to the relay; (status, [(perf_counter at the read, bytes read)])."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("POST", "/llm/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    reads = []
    while data := resp.read1(65536):
        reads.append((time.perf_counter(), data))
    conn.close()
    return resp.status, reads


def test_relay_streams_each_token_as_it_is_sent(tmp_path: Path) -> None:
    args = ("--mode", "staggered", "--interval-ms", str(INTERVAL_MS), "--tokens", str(TOKENS))
    with fake_sse_server(tmp_path, *args) as host, locust_ui(tmp_path, host) as (base, _run, _log):
        assert [m["id"] for m in get_json(f"{base}/llm/chat/models")["data"]] == ["fake"]
        status, reads = _stream(base, {"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
        token_times = []
        for stamp, data in reads:
            for event in data.split(b"\n\n"):
                if b'"content"' in event and b'"role"' not in event:
                    token_times.append(stamp)
        assert len(token_times) == TOKENS
        gaps = [b - a for a, b in itertools.pairwise(token_times)]
        # Buffered, all tokens would arrive in one read at the end (gaps ~0). Relayed as sent, they keep the server's
        # 150 ms pace; the bound leaves room for a loaded 2-core machine.
        assert sorted(gaps)[len(gaps) // 2] > 0.5 * INTERVAL_MS / 1000, gaps
        assert token_times[-1] - token_times[0] > 0.5 * (TOKENS - 1) * INTERVAL_MS / 1000
        assert b"data: [DONE]" in reads[-1][1]
        server = get_json(f"{base}/llm/chat/server")
        assert server["available"] is False and "/metrics" in server["reason"]


def test_relay_refuses_a_bad_request_and_names_a_dead_host(tmp_path: Path) -> None:
    with locust_ui(tmp_path, "http://127.0.0.1:9") as (base, _run, _log):
        status, reads = _stream(base, {"model": "x", "messages": []})
        assert status == 400 and b"messages: expected a non-empty list" in reads[0][1]
        status, reads = _stream(base, {"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 502 and b"127.0.0.1:9" in b"".join(d for _, d in reads)
