"""The chat relay's request checks and its reading of the server's running/waiting gauges."""

from __future__ import annotations

import pytest

from vlab.locust.chat import MAX_TOKENS_CAP, chat_body, server_counts

VLLM_METRICS = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 5.0
"""


def test_server_counts_from_vllm_gauges() -> None:
    assert server_counts(200, VLLM_METRICS) == {"available": True, "running": 3, "waiting": 5, "reason": None}


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (404, b"Not Found", "/metrics answered HTTP 404"),
        (200, b"# TYPE other gauge\nother 1\n", "/metrics has no vLLM request gauges"),
        (0, b"http://h:1: Connection refused", "Connection refused"),
    ],
)
def test_server_counts_say_why_not(status: int, body: bytes, reason: str) -> None:
    out = server_counts(status, body)
    assert out["available"] is False and out["running"] is None and reason in out["reason"]


def test_chat_body_streams_with_usage_and_keeps_only_text_messages() -> None:
    body = chat_body({"model": "m", "messages": [{"role": "user", "content": "hi", "extra": 1}], "max_tokens": 8})
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "expected a JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"model": "m", "messages": [{"role": "user", "content": ["x"]}]}, "text content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": MAX_TOKENS_CAP + 1},
            "max_tokens",
        ),
    ],
)
def test_chat_body_refuses(payload: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chat_body(payload)
