"""Reasoning phases, Responses API events and embeddings bodies, pinned on hand-made streams (vlab.client.sse,
vlab.core.metrics.PhaseTiming)."""

from __future__ import annotations

import json
import math

import pytest

from tests.unit.test_metrics import DONE, raw_stream, usage_event
from vlab.client.sse import parse_response
from vlab.client.stream import RawStream
from vlab.core.metrics import ANSWER, EMPTY, REASONING, PhaseTiming
from vlab.core.records import ErrorKind


def delta_event(**delta: str) -> bytes:
    obj = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def test_phase_timing_formulas() -> None:
    # events at 10, 20, 30 (reasoning), 35 (empty: stays in reasoning), 50, 54, 60 (answer) ms after send
    phases = PhaseTiming.from_events([10, 20, 30, 35, 50, 54, 60], "RRRE" + "AAA")
    assert phases is not None
    assert (phases.ttfr_ms, phases.ttfa_ms) == (10, 50)
    assert (phases.reasoning_tokens, phases.answer_tokens) == (4, 3)
    assert phases.itl_reasoning_ms == pytest.approx((35 - 10) / 3)  # the 35 → 50 gap crosses phases: neither
    assert phases.itl_answer_ms == pytest.approx((60 - 50) / 2)


def test_phase_timing_edge_cases() -> None:
    assert PhaseTiming.from_events([1.0, 2.0], ANSWER * 2) is None  # no reasoning: not a reasoning stream
    only = PhaseTiming.from_events([5.0, 9.0], EMPTY + REASONING)
    assert only is not None and math.isnan(only.ttfa_ms) and only.reasoning_tokens == 2  # leading empty: reasoning
    assert only.itl_reasoning_ms == 4.0 and math.isnan(only.itl_answer_ms)
    with pytest.raises(ValueError):
        PhaseTiming.from_events([1.0], REASONING * 2)


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_a_chat_stream_with_reasoning_deltas_is_classified_per_event(field: str) -> None:
    events = [
        delta_event(role="assistant", content=""),
        delta_event(**{field: "Let"}),
        delta_event(**{field: " me think"}),
        delta_event(content=""),
        delta_event(content="Yes"),
        usage_event(7, 4),
        DONE,
    ]
    raw = raw_stream(events, [100.1, 100.2, 100.3, 100.35, 100.4, 100.4, 100.4])
    result = parse_response(raw, "chat")
    assert result.ok and result.event_kinds == "RREA"
    assert len(result.token_stamps) == 4  # the role chunk is no token event; the empty one is
    plain = parse_response(raw_stream([delta_event(content="a"), usage_event(1, 1), DONE], [1.0, 1.0, 1.0]), "chat")
    assert plain.ok and plain.event_kinds == ""


def response_event(kind: str, **fields: object) -> bytes:
    body = json.dumps({**fields, "type": kind}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


def responses_stream(*, end: str = "response.completed", status: str = "completed") -> list[bytes]:
    response = {"id": "r", "status": "in_progress", "output": []}
    usage = {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}
    return [
        response_event("response.created", response=response),
        response_event("response.output_item.added", item={"type": "message", "content": []}, output_index=0),
        response_event("response.reasoning_text.delta", delta="hmm"),
        response_event("response.output_text.delta", delta="Hi"),
        response_event("response.output_text.delta", delta=" there"),
        response_event("response.output_text.done", text="Hi there"),
        response_event(
            end,
            response={
                "id": "r",
                "status": status,
                "usage": usage,
                "incomplete_details": None,
                "error": {"message": "boom"},
            },
        ),
    ]


def test_a_responses_stream_counts_its_delta_events_and_reads_usage_from_the_end() -> None:
    raw = raw_stream(responses_stream(), [1.0, 1.1, 1.2, 1.3, 1.4, 1.4, 1.4])
    result = parse_response(raw, "responses", want_text=True)
    assert result.ok and result.done
    assert result.first_choice_stamp == 1.1  # output_item.added opens the answer
    assert result.token_stamps == [1.2, 1.3, 1.4]
    assert result.event_kinds == "RAA" and result.text == "Hi there"
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (12, 3, "completed")


def test_a_responses_stream_without_its_end_event_or_that_failed_is_an_error() -> None:
    cut = raw_stream(responses_stream()[:-1], [1.0] * 6)
    assert parse_response(cut, "responses").error_kind == ErrorKind.NO_DONE
    failed = parse_response(raw_stream(responses_stream(end="response.failed", status="failed"), [1.0] * 7),
                            "responses")  # fmt: skip
    assert failed.error_kind == ErrorKind.SERVER_ERROR_EVENT and "boom" in failed.error


def embeddings_raw(body: dict | bytes, stamps: list[float] | None = None, complete: bool = True) -> RawStream:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawStream(t_send=10.0, status=200, reads=[data[:5], data[5:]], stamps=stamps or [10.1, 10.25],
                     complete=complete)  # fmt: skip


def test_an_embeddings_answer_ends_at_its_last_byte_and_reports_input_tokens() -> None:
    body = {"data": [{"embedding": [0.1, 0.2]}, {"embedding": [0.3, 0.4]}], "usage": {"prompt_tokens": 18}}
    result = parse_response(embeddings_raw(body), "embeddings")
    assert result.ok and not result.streamed and result.end_stamp == 10.25
    assert result.prompt_tokens == 18 and result.token_stamps == []
    assert parse_response(embeddings_raw({"data": []}), "embeddings").error_kind == ErrorKind.MALFORMED
    assert parse_response(embeddings_raw(b"<html>"), "embeddings").error_kind == ErrorKind.MALFORMED
    assert parse_response(embeddings_raw(body, complete=False), "embeddings").error_kind == ErrorKind.STREAM_CUT
    refused = RawStream(status=400, reads=[b'{"error":{"message":"too long"}}'], stamps=[1.0], complete=True)
    assert parse_response(refused, "embeddings").error_kind == ErrorKind.HTTP
