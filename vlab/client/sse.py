"""Turning a finished `RawStream` into token events: HTTP de-chunking, SSE framing, and the few JSON decodes needed.

Runs after the stream ended, off the timing path. Each SSE event gets the stamp of the read that completed it.
Events are classified by their bytes; JSON is decoded only where a value is needed (usage, finish_reason, errors,
and the text when the caller asks for it), and every event is checked to be a JSON object with `choices`.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

from vlab.client.http import describe_body
from vlab.client.stream import RawStream
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


def parse_stream(raw: RawStream, *, want_text: bool = False, require_done: bool = True) -> StreamResult:
    """Classify the events of one streamed chat or text completion (see `vlab.core.metrics` for what counts).

    `require_done=False` accepts a body that ends cleanly after a choice with a `finish_reason` but without
    `data: [DONE]` (`transformers serve` 5.19 never sends it); a body ending without a finish_reason is still
    `no_done`."""
    result = StreamResult(status=raw.status, error_kind=raw.error_kind, error=raw.error)
    if raw.status and not 200 <= raw.status < 300:
        body = b"".join(raw.reads) if not raw.chunked else dechunk(raw)[0]
        result.error_kind = ErrorKind.RATE_LIMITED if raw.status == 429 else ErrorKind.HTTP
        result.error = f"HTTP {raw.status}: {describe_body(body)}"
        retry_after = raw.headers.get("retry-after")
        if raw.status == 429 and retry_after:
            result.error += f" (Retry-After: {retry_after[:20]})"
        return result
    if raw.status == 0:
        return result
    payload, ends = dechunk(raw)
    stamps = raw.stamps
    last_read = len(stamps) - 1
    texts: list[str] = []
    malformed = ""
    events = payload.split(b"\n\n")
    if events[-1].strip():
        malformed = "stream ended inside an event"
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
                result.done = True
                continue
            if not (data.startswith(b"{") and data.endswith(b"}")):
                malformed = malformed or f"non-JSON data line: {data[:80]!r}"
                continue
            if b'"choices":[]' in data or b'"choices": []' in data:
                _read_usage(data, result)
                continue
            if b'"choices"' not in data:
                if b'"error"' in data or b'"object":"error"' in data:
                    result.error_kind = result.error_kind or ErrorKind.SERVER_ERROR_EVENT
                    result.error = result.error or describe_body(data)
                else:
                    malformed = malformed or f"event without choices: {data[:80]!r}"
                continue
            if result.first_choice_stamp is None:
                result.first_choice_stamp = stamp
            is_role_only = b'"role"' in data and not result.token_stamps and _is_role_only(data)
            if not (is_role_only or _EMPTY_DELTA in data or _EMPTY_DELTA_SPACED in data):
                result.token_stamps.append(stamp)
            if b'"finish_reason":null' not in data or b'"usage":{' in data or want_text:
                _read_choice(data, result, texts if want_text else None)
    if want_text:
        result.text = "".join(texts)
    if result.error_kind:
        return result
    if malformed:
        result.error_kind, result.error = ErrorKind.MALFORMED, malformed
    elif not raw.complete:
        result.error_kind, result.error = ErrorKind.STREAM_CUT, "stream ended before its last chunk"
    elif not result.done and (require_done or not result.finish_reason):
        result.error_kind, result.error = ErrorKind.NO_DONE, "stream ended without data: [DONE]"
    return result


_EMPTY_DELTA, _EMPTY_DELTA_SPACED = b'"delta":{}', b'"delta": {}'
"""A chat chunk with an empty delta carries no output: `transformers serve` closes every stream with one
(`{"delta":{},"finish_reason":"length","usage":{…}}`) after the last token, where vLLM puts the finish_reason on
the last token's own chunk. It is not a token event (it would add one event and one ~0 ms gap per request)."""

GENERATED_FIELDS = ("content", "reasoning", "reasoning_content", "tool_calls")
"""Delta fields that carry generated output: a chunk with none of them (only a role) is not a token event."""


def _is_role_only(data: bytes) -> bool:
    try:
        delta = json.loads(data)["choices"][0].get("delta", {})
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False
    return isinstance(delta, dict) and "role" in delta and not any(delta.get(k) for k in GENERATED_FIELDS)


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
