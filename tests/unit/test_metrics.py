"""The metric formulas, pinned on hand-made token timelines (vlab.core.metrics, vlab.client.sse)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vlab.client.sse import parse_stream
from vlab.client.stream import RawStream
from vlab.core.metrics import RequestTiming, goodput, meets_slo, summarize, throughput
from vlab.core.records import ErrorKind


def chat_event(content: str | None = None, *, role: bool = False, finish: str | None = None) -> bytes:
    delta = {"role": "assistant", "content": ""} if role else {"content": content}
    obj = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def usage_event(prompt: int, completion: int) -> bytes:
    obj = {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chunked(events: list[bytes]) -> list[bytes]:
    """HTTP chunked framing, one chunk per event, as uvicorn sends a StreamingResponse; last read has the end."""
    reads = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    reads[-1] += b"0\r\n\r\n"
    return reads


def raw_stream(events: list[bytes], stamps: list[float], t_send: float = 100.0) -> RawStream:
    return RawStream(t_send=t_send, status=200, chunked=True, reads=chunked(events), stamps=stamps, complete=True)


def test_request_timing_formulas() -> None:
    # send at 10.000 s; first choice (role chunk) at 10.100; tokens at 10.100, 10.120, 10.150, 10.190
    timing = RequestTiming.from_stamps(10.0, 10.1, [10.1, 10.12, 10.15, 10.19])
    assert timing.ttft_ms == pytest.approx(100.0)
    assert timing.e2e_ms == pytest.approx(190.0)
    assert timing.itl_gaps_ms == pytest.approx([20.0, 30.0, 40.0])
    assert timing.itl_mean_ms == pytest.approx(30.0)
    assert timing.tpot_ms(4) == pytest.approx((190.0 - 100.0) / 3)
    # usage says 7 tokens over 4 events (multi-token chunks): TPOT counts tokens, ITL counts events
    assert timing.tpot_ms(7) == pytest.approx(90.0 / 6)


def test_one_output_token_has_no_itl_or_tpot() -> None:
    timing = RequestTiming.from_stamps(0.0, 0.05, [0.05])
    assert timing.ttft_ms == pytest.approx(50.0) and timing.e2e_ms == pytest.approx(50.0)
    assert timing.itl_gaps_ms == [] and math.isnan(timing.itl_mean_ms) and math.isnan(timing.tpot_ms(1))


def test_role_chunk_starts_ttft_but_is_not_a_token() -> None:
    events = [chat_event(role=True), chat_event("Hi"), chat_event(""), chat_event("!", finish="length"),
              usage_event(12, 3), DONE]  # fmt: skip
    stamps = [100.2, 100.21, 100.24, 100.30, 100.30, 100.30]
    result = parse_stream(raw_stream(events, stamps), want_text=True)
    assert result.ok, result.error
    assert result.first_choice_stamp == 100.2  # TTFT at the role chunk, like vllm bench serve
    assert result.token_stamps == [100.21, 100.24, 100.30]  # the empty-text event is a token event; role is not
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (12, 3, "length")
    assert result.text == "Hi!"


def test_event_split_across_reads_takes_the_stamp_of_the_completing_read() -> None:
    events = [chat_event("a"), chat_event("b", finish="length"), usage_event(5, 2), DONE]
    whole = b"".join(chunked(events))
    cut = whole.index(b'"b"')  # the second event's bytes arrive in two reads
    raw = RawStream(t_send=0.0, status=200, chunked=True, reads=[whole[:cut], whole[cut:]], stamps=[1.0, 2.0],
                    complete=True)  # fmt: skip
    result = parse_stream(raw)
    assert result.token_stamps == [1.0, 2.0]


def test_several_events_in_one_read_share_its_stamp() -> None:
    events = [chat_event("a"), chat_event("b"), chat_event("c", finish="length"), usage_event(5, 3), DONE]
    raw = RawStream(t_send=0.0, status=200, chunked=True, reads=[b"".join(chunked(events))], stamps=[7.0],
                    complete=True)  # fmt: skip
    assert parse_stream(raw).token_stamps == [7.0, 7.0, 7.0]


def test_completions_stream_without_role_chunk() -> None:
    def text_event(text: str, finish: str | None = None) -> bytes:
        obj = {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    events = [text_event("x"), text_event("y", "length"), usage_event(4, 2), DONE]
    result = parse_stream(raw_stream(events, [1.0, 1.1, 1.1, 1.1]))
    assert result.first_choice_stamp == 1.0 and result.token_stamps == [1.0, 1.1]


@pytest.mark.parametrize(
    ("events", "complete", "kind"),
    [
        ([chat_event("a"), b"data: not json\n\n", DONE], True, ErrorKind.MALFORMED),
        ([chat_event("a"), b'data: {"id":"x"}\n\n', DONE], True, ErrorKind.MALFORMED),
        ([chat_event("a"), chat_event("b", finish="length")], True, ErrorKind.NO_DONE),
        ([chat_event("a")], False, ErrorKind.STREAM_CUT),
        ([chat_event("a"), b'data: {"object":"error","message":"boom"}\n\n', DONE], True, ErrorKind.SERVER_ERROR_EVENT),
    ],
)
def test_faulty_streams_are_classified(events: list[bytes], complete: bool, kind: str) -> None:
    raw = raw_stream(events, [1.0] * len(events))
    raw.complete = complete
    assert parse_stream(raw).error_kind == kind


def test_http_error_body_is_reported() -> None:
    body = b'{"error":{"message":"This model\'s maximum context length is 2048 tokens","code":400}}'
    raw = RawStream(status=400, reads=[body], stamps=[1.0], complete=True)
    result = parse_stream(raw)
    assert result.error_kind == ErrorKind.HTTP and "maximum context length" in result.error and "400" in result.error


def test_summarize_matches_numpy_and_ignores_nan() -> None:
    values = np.arange(1, 1001, dtype=float)
    s = summarize([*values, math.nan])
    assert s.n == 1000 and s.mean == pytest.approx(500.5)
    assert s.p50 == pytest.approx(np.percentile(values, 50)) and s.p999 == pytest.approx(np.percentile(values, 99.9))
    assert summarize([]).n == 0 and math.isnan(summarize([]).p99)


def test_throughput_counts_requests_ending_in_the_window() -> None:
    ends = np.array([0.5, 1.5, 2.5, 9.0])
    out = np.array([10, 20, 30, 40])
    prompt = np.array([1, 1, 1, 1])
    t = throughput(ends, out, prompt, (1.0, 3.0))
    assert t.requests_per_s == pytest.approx(1.0) and t.output_tokens_per_s == pytest.approx(25.0)
    assert t.total_tokens_per_s == pytest.approx(26.0)


def test_slo_and_goodput() -> None:
    ttft = np.array([100.0, 600.0, 200.0])
    itl = np.array([20.0, 20.0, math.nan])
    ok = meets_slo(ttft, itl, itl, ttft, ttft_max=500, itl_max=25)
    assert ok.tolist() == [True, False, True]  # undefined ITL (one token) does not fail the SLO
    assert goodput(int(ok.sum()), 3, 4.0) == pytest.approx((0.5, 2 / 3))


# transformers serve 5.19's chat stream, as it sent it (ids shortened): a role chunk, one chunk per token, a closing
# chunk with an empty delta, the finish_reason and the usage, and no `data: [DONE]`.
TRANSFORMERS_STREAM = [
    b'data: {"id":"b9","choices":[{"delta":{"role":"assistant"},"index":0}],"created":1796172011,'
    b'"model":"smollm2@main","object":"chat.completion.chunk","system_fingerprint":""}\n\n',
    b'data: {"id":"b9","choices":[{"delta":{"content":"I"},"index":0}],"created":1796172012,'
    b'"model":"smollm2@main","object":"chat.completion.chunk","system_fingerprint":""}\n\n',
    b'data: {"id":"b9","choices":[{"delta":{"content":"\'m"},"index":0}],"created":1796172012,'
    b'"model":"smollm2@main","object":"chat.completion.chunk","system_fingerprint":""}\n\n',
    b'data: {"id":"b9","choices":[{"delta":{},"index":0,"finish_reason":"length"}],"created":1796172013,'
    b'"model":"smollm2@main","object":"chat.completion.chunk","system_fingerprint":"",'
    b'"usage":{"completion_tokens":2,"prompt_tokens":32,"total_tokens":34}}\n\n',
]


def test_transformers_stream_without_done_is_complete_when_allowed() -> None:
    raw = raw_stream(TRANSFORMERS_STREAM, [1.0, 1.2, 1.3, 1.31])
    assert parse_stream(raw).error_kind == ErrorKind.NO_DONE  # the default: vLLM always ends with [DONE]
    result = parse_stream(raw, want_text=True, require_done=False)
    assert result.ok, result.error
    assert result.first_choice_stamp == 1.0
    assert result.token_stamps == [1.2, 1.3]  # the closing empty-delta chunk is not a token event
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (32, 2, "length")
    assert result.text == "I'm"


def test_stream_without_done_and_without_finish_reason_stays_an_error() -> None:
    raw = raw_stream(TRANSFORMERS_STREAM[:3], [1.0, 1.2, 1.3])
    assert parse_stream(raw, require_done=False).error_kind == ErrorKind.NO_DONE
