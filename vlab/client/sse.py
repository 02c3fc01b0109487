"""Turning a finished `RawStream` into token events: HTTP de-chunking, SSE framing, and the few JSON decodes needed.

Runs after the stream ended, off the timing path. Each SSE event gets the stamp of the read that completed it.
Events are classified by their bytes; JSON is decoded only where a value is needed (usage, finish_reason, errors,
the text when the caller asks for it, and the deltas of a stream that carries reasoning), and every event is checked
to be a JSON object with `choices`. One parser per kind of answer (`parse_response` picks it by endpoint): chat and
text completions (`parse_stream`), the Responses API's typed events (`parse_responses_stream`), and the JSON body of
an embeddings request (`parse_embeddings`, not a stream).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vlab.client.http import describe_body
from vlab.client.stream import RawStream
from vlab.core.metrics import ANSWER, EMPTY, REASONING
from vlab.core.records import ErrorKind

_DONE = b"[DONE]"


@dataclass(slots=True)
class StreamResult:
    """What a streamed completion contained. Stamps are perf_counter seconds."""

    status: int
    first_choice_stamp: float | None = None
    """The first choice event, role-only chunks included (`first_chunk_ms`)."""
    token_stamps: list[float] = field(default_factory=list)
    """Each token event (see `vlab.core.metrics`): the first one is TTFT."""
    prompt_tokens: int = -1
    completion_tokens: int = -1
    finish_reason: str = ""
    text: str = ""
    """The generated text (filled only when asked for, e.g. for multi-turn history)."""
    done: bool = False
    """`data: [DONE]` arrived."""
    error_kind: str = ""
    error: str = ""
    event_kinds: str = ""
    """Reasoning streams: each token event's kind, one character each (`vlab.core.metrics`: REASONING, ANSWER,
    EMPTY); empty when no event carried reasoning."""
    streamed: bool = True
    """False for an answer that is not a stream (embeddings): it succeeds without token events."""
    end_stamp: float | None = None
    """Unstreamed answers: the stamp of the read that completed the body."""

    @property
    def ok(self) -> bool:
        return not self.error_kind


def dechunk(raw: RawStream) -> tuple[bytes, list[int]]:
    """The body payload and, per read, the payload offset at which that read's bytes end.

    For a chunked body the chunk-size lines and CRLFs are removed; `ends[i]` is how many payload bytes were
    complete once read i had arrived, so the stamp of payload byte k is `stamps[bisect_right(ends, k)]`.
    """
    body = b"".join(raw.reads)
    raw_ends: list[int] = []
    total = 0
    for piece in raw.reads:
        total += len(piece)
        raw_ends.append(total)
    if not raw.chunked:
        return body, raw_ends
    payload = bytearray()
    # Map each raw read end to a payload offset while walking the chunk framing.
    map_points: list[tuple[int, int]] = []  # (raw offset where a data segment starts, payload offset there)
    pos = 0
    n = len(body)
    while pos < n:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol].split(b";", 1)[0] or b"0", 16)
        start = eol + 2
        if size == 0:
            break
        map_points.append((start, len(payload)))
        payload += body[start : start + size]
        pos = start + size + 2
    starts = [p[0] for p in map_points]
    ends: list[int] = []
    for raw_end in raw_ends:
        j = bisect.bisect_right(starts, raw_end) - 1
        if j < 0:
            ends.append(0)
            continue
        seg_raw, seg_payload = map_points[j]
        seg_len = (map_points[j + 1][1] if j + 1 < len(map_points) else len(payload)) - seg_payload
        ends.append(seg_payload + min(raw_end - seg_raw, seg_len))
    return bytes(payload), ends


def parse_response(
    raw: RawStream, endpoint: str, *, want_text: bool = False, require_done: bool = True
) -> StreamResult:
    """What the response of one request to `endpoint` (`vlab.core.scenario.ApiConfig.endpoint`) contained;
    `require_done` is `api.require_done` (see `parse_stream`)."""
    if endpoint == "embeddings":
        return parse_embeddings(raw)
    if endpoint == "responses":
        return parse_responses_stream(raw, want_text=want_text)
    return parse_stream(raw, want_text=want_text, require_done=require_done)


def _http_failure(raw: RawStream) -> StreamResult | None:
    """The result of a request that got no 2xx answer (HTTP error or no response at all), else None."""
    result = StreamResult(status=raw.status, error_kind=raw.error_kind, error=raw.error)
    if raw.status and not 200 <= raw.status < 300:
        body = b"".join(raw.reads) if not raw.chunked else dechunk(raw)[0]
        result.error_kind = ErrorKind.RATE_LIMITED if raw.status == 429 else ErrorKind.HTTP
        result.error = f"HTTP {raw.status}: {describe_body(body)}"
        retry_after = raw.headers.get("retry-after")
        if raw.status == 429 and retry_after:
            result.error += f" (Retry-After: {retry_after[:20]})"
        return result
    return result if raw.status == 0 else None


class _Frames:
    """The JSON-object `data:` lines of an SSE body, each with the stamp of the read that completed its event.

    Iterating yields (stamp, data); `[DONE]` sets `done`; a data line that is not a JSON object, or a body that ends
    inside an event, sets `malformed` (the first problem found)."""

    __slots__ = ("done", "ends", "malformed", "payload", "stamps")

    def __init__(self, raw: RawStream) -> None:
        self.payload, self.ends = dechunk(raw)
        self.stamps = raw.stamps
        self.done = False
        self.malformed = ""

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        stamps, ends = self.stamps, self.ends
        last_read = len(stamps) - 1
        events = self.payload.split(b"\n\n")
        if events[-1].strip():
            self.malformed = "stream ended inside an event"
        end = 0  # payload offset just past the current event's blank line
        read = 0  # index of the read holding that event's last byte (ends[read] >= end)
        for event in events[:-1]:
            end += len(event) + 2
            while read < last_read and ends[read] < end:
                read += 1
            stamp = stamps[read] if stamps else 0.0
            # vLLM's form, one data line per event, skips the split
            lines = (event,) if event.startswith(b"data:") and b"\n" not in event else event.split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # comments (":"), event names and ids carry nothing we measure
                data = line[5:].strip()
                if data == _DONE:
                    self.done = True
                elif data.startswith(b"{") and data.endswith(b"}"):
                    yield stamp, data
                else:
                    self.malformed = self.malformed or f"non-JSON data line: {data[:80]!r}"


def _conclude(result: StreamResult, raw: RawStream, malformed: str, ended: bool, no_end: str) -> StreamResult:
    """The stream's error, if it has one: its own error events first, then malformed data, a cut, no end marker."""
    if result.error_kind:
        return result
    if malformed:
        result.error_kind, result.error = ErrorKind.MALFORMED, malformed
    elif not raw.complete:
        result.error_kind, result.error = ErrorKind.STREAM_CUT, "stream ended before its last chunk"
    elif not ended:
        result.error_kind, result.error = ErrorKind.NO_DONE, no_end
    return result


_EMPTY_CHAT_DELTA, _EMPTY_CHAT_DELTA_SPACED = b'"delta":{}', b'"delta": {}'
"""A chat chunk with an empty delta carries no output: `transformers serve` closes every stream with one
(`{"delta":{},"finish_reason":"length","usage":{…}}`) after the last token, where vLLM puts the finish_reason on
the last token's own chunk. It is not a token event (it would add one event and one ~0 ms gap per request)."""


def parse_stream(raw: RawStream, *, want_text: bool = False, require_done: bool = True) -> StreamResult:
    """Classify the events of one streamed chat or text completion (see `vlab.core.metrics` for what counts).

    `require_done=False` accepts a body that ends cleanly after a choice with a `finish_reason` but without
    `data: [DONE]` (`transformers serve` 5.19 never sends it); a body ending without a finish_reason is still
    `no_done`.

    A body that mentions `reasoning` anywhere is a possible reasoning stream: each token event's delta is then decoded
    to tell reasoning, answer and empty events apart (`StreamResult.event_kinds`); other streams skip that decode."""
    failed = _http_failure(raw)
    if failed is not None:
        return failed
    result = StreamResult(status=raw.status, error_kind=raw.error_kind, error=raw.error)
    frames = _Frames(raw)
    kinds: list[str] | None = [] if b"reasoning" in frames.payload else None
    texts: list[str] = []
    for stamp, data in frames:
        if b'"choices":[]' in data or b'"choices": []' in data:
            _read_usage(data, result)
            continue
        if b'"choices"' not in data:
            if b'"error"' in data or b'"object":"error"' in data:
                result.error_kind = result.error_kind or ErrorKind.SERVER_ERROR_EVENT
                result.error = result.error or describe_body(data)
            else:
                frames.malformed = frames.malformed or f"event without choices: {data[:80]!r}"
            continue
        if result.first_choice_stamp is None:
            result.first_choice_stamp = stamp
        is_role_only = b'"role"' in data and not result.token_stamps and _is_role_only(data)
        if not (is_role_only or _EMPTY_CHAT_DELTA in data or _EMPTY_CHAT_DELTA_SPACED in data):
            result.token_stamps.append(stamp)
            if kinds is not None:
                kinds.append(_choice_kind(data))
        if b'"finish_reason":null' not in data or b'"usage":{' in data or want_text:
            _read_choice(data, result, texts if want_text else None)
    if want_text:
        result.text = "".join(texts)
    if kinds is not None and REASONING in kinds:
        result.event_kinds = "".join(kinds)
    result.done = frames.done
    ended = frames.done or (not require_done and bool(result.finish_reason))
    return _conclude(result, raw, frames.malformed, ended, "stream ended without data: [DONE]")


GENERATED_FIELDS = ("content", "reasoning", "reasoning_content", "tool_calls")
"""Delta fields that carry generated output: a chunk with none of them (only a role) is not a token event."""


def _is_role_only(data: bytes) -> bool:
    try:
        delta = json.loads(data)["choices"][0].get("delta", {})
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False
    return isinstance(delta, dict) and "role" in delta and not any(delta.get(k) for k in GENERATED_FIELDS)


def _choice_kind(data: bytes) -> str:
    """A chat or text choice event's kind: reasoning text, answer text (content or a tool call), or empty."""
    try:
        choice = json.loads(data)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return EMPTY  # reported as malformed by `_read_choice`
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        return ANSWER if isinstance(choice, dict) and choice.get("text") else EMPTY
    if delta.get("reasoning") or delta.get("reasoning_content"):
        return REASONING
    return ANSWER if delta.get("content") or delta.get("tool_calls") else EMPTY


def _read_choice(data: bytes, result: StreamResult, texts: list[str] | None) -> None:
    try:
        obj = json.loads(data)
        choice = obj["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        result.error_kind = result.error_kind or ErrorKind.MALFORMED
        result.error = result.error or f"undecodable choice event: {data[:80]!r}"
        return
    if choice.get("finish_reason"):
        result.finish_reason = str(choice["finish_reason"])
    if texts is not None:
        delta = choice.get("delta")
        texts.append((delta.get("content") if isinstance(delta, dict) else choice.get("text")) or "")
    if isinstance(obj.get("usage"), dict):
        _apply_usage(obj["usage"], result)


def _read_usage(data: bytes, result: StreamResult) -> None:
    try:
        usage = json.loads(data).get("usage")
    except ValueError:
        result.error_kind = result.error_kind or ErrorKind.MALFORMED
        result.error = result.error or f"undecodable usage event: {data[:80]!r}"
        return
    if isinstance(usage, dict):
        _apply_usage(usage, result)


def _apply_usage(usage: dict[str, Any], result: StreamResult) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    result.prompt_tokens = int(prompt) if isinstance(prompt, int | float) and prompt else -1
    result.completion_tokens = int(completion) if isinstance(completion, int | float) else -1


# ----------------------------------------------------------------------------------------------- the Responses API
_EVENT_TYPE = re.compile(rb'"type"\s*:\s*"((?:response\.|error)[^"]*)"')
_EMPTY_DELTA = re.compile(rb'"delta"\s*:\s*""')
RESPONSE_TOKEN_EVENTS: dict[bytes, str] = {
    b"response.output_text.delta": ANSWER,
    b"response.refusal.delta": ANSWER,
    b"response.function_call_arguments.delta": ANSWER,
    b"response.reasoning_text.delta": REASONING,
    b"response.reasoning_summary_text.delta": REASONING,
}
"""Responses API stream events that carry generated output: each is a token event of that kind (empty delta: EMPTY)."""
RESPONSE_END_EVENTS = (b"response.completed", b"response.incomplete", b"response.failed")
"""The events that end a Responses API stream (it sends no `[DONE]`); their `response` holds `usage`."""


def parse_responses_stream(raw: RawStream, *, want_text: bool = False) -> StreamResult:
    """Classify the events of one streamed `/v1/responses` request (OpenAI's Responses API, as vLLM serves it).

    Token events are the `*.delta` events of `RESPONSE_TOKEN_EVENTS` (output text, refusals, tool-call arguments,
    reasoning text); the first choice event (`first_chunk_ms`) is the first `response.output_item.added`, the
    Responses API's opening of an output item, or the first token event if that comes first. The stream ends with one
    of `RESPONSE_END_EVENTS`, whose `response.usage` gives input_tokens / output_tokens and whose status (or the
    reason it is incomplete, e.g. `max_output_tokens`) is the finish reason; `response.failed` and `error` events are
    server error events."""
    failed = _http_failure(raw)
    if failed is not None:
        return failed
    result = StreamResult(status=raw.status, error_kind=raw.error_kind, error=raw.error)
    frames = _Frames(raw)
    kinds: list[str] = []
    texts: list[str] = []
    ended = False
    for stamp, data in frames:
        match = _EVENT_TYPE.search(data)
        while match is not None and not match.group(1).startswith((b"response.", b"error")):
            match = _EVENT_TYPE.search(data, match.end())
        etype = match.group(1) if match is not None else b""
        kind = RESPONSE_TOKEN_EVENTS.get(etype)
        if kind is not None:
            if result.first_choice_stamp is None:
                result.first_choice_stamp = stamp
            result.token_stamps.append(stamp)
            kinds.append(EMPTY if _EMPTY_DELTA.search(data) else kind)
            if want_text and etype == b"response.output_text.delta":
                texts.append(_json_field(data, "delta"))
        elif etype == b"response.output_item.added":
            if result.first_choice_stamp is None:
                result.first_choice_stamp = stamp
        elif etype in RESPONSE_END_EVENTS:
            ended = True
            _read_response_end(data, result)
        elif etype == b"error":
            result.error_kind = result.error_kind or ErrorKind.SERVER_ERROR_EVENT
            result.error = result.error or describe_body(data)
        elif not etype:
            frames.malformed = frames.malformed or f"event without a response type: {data[:80]!r}"
    if want_text:
        result.text = "".join(texts)
    if REASONING in kinds:
        result.event_kinds = "".join(kinds)
    result.done = ended
    return _conclude(result, raw, frames.malformed, ended, "stream ended without response.completed")


def _json_field(data: bytes, key: str) -> str:
    try:
        value = json.loads(data).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _read_response_end(data: bytes, result: StreamResult) -> None:
    """Usage, finish reason and (response.failed) the error of a Responses API stream's last event."""
    try:
        response = json.loads(data)["response"]
        status = str(response.get("status") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        result.error_kind = result.error_kind or ErrorKind.MALFORMED
        result.error = result.error or f"undecodable end event: {data[:80]!r}"
        return
    incomplete = response.get("incomplete_details")
    reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
    result.finish_reason = str(reason or status)
    usage = response.get("usage")
    if isinstance(usage, dict):
        _apply_usage({"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")},
                     result)  # fmt: skip
    if status == "failed":
        error = response.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        result.error_kind = result.error_kind or ErrorKind.SERVER_ERROR_EVENT
        result.error = result.error or f"response failed: {message or describe_body(data)}"


# ---------------------------------------------------------------------------------------------------- embeddings
def parse_embeddings(raw: RawStream) -> StreamResult:
    """What one `/v1/embeddings` answer (a JSON body, not a stream) contained: `end_stamp` is its last byte,
    `prompt_tokens` the server's `usage.prompt_tokens`; a body without a non-empty embedding per item is malformed."""
    failed = _http_failure(raw)
    if failed is not None:
        failed.streamed = False
        return failed
    result = StreamResult(status=raw.status, error_kind=raw.error_kind, error=raw.error, streamed=False)
    if result.error_kind:
        return result
    if not raw.complete:
        result.error_kind, result.error = ErrorKind.STREAM_CUT, "response ended before its last byte"
        return result
    body = dechunk(raw)[0]
    try:
        obj = json.loads(body)
        items = obj["data"]
        vectors = [item["embedding"] for item in items]
    except (ValueError, KeyError, TypeError):
        result.error_kind, result.error = ErrorKind.MALFORMED, f"not an embeddings answer: {describe_body(body)}"
        return result
    if not vectors or not all(isinstance(v, list | str) and v for v in vectors):
        result.error_kind, result.error = ErrorKind.MALFORMED, "an answer without embeddings"
        return result
    result.end_stamp = raw.stamps[-1] if raw.stamps else None
    result.done = True
    if isinstance(obj.get("usage"), dict):
        _apply_usage({"prompt_tokens": obj["usage"].get("prompt_tokens"), "completion_tokens": None}, result)
    return result
