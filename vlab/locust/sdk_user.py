"""An optional user that streams through the official `openai` SDK: for comparison, never for measurement.

It answers "what does an application built on the SDK see?" with the scenario's own workload, records and report.
It is not the measurement path, and its runs say so (`run.json` → `"client": "openai-sdk"`, a warning in the
terminal and in the report): the SDK decodes every chunk into pydantic objects before the user can stamp it, so
each stamp includes that work and the queueing behind other streams' decoding, and one process tops out at roughly a
tenth of the suite's token events/s (`bench/client_bench.py --clients suite,sdk`; docs/performance.md).

    locust -f locustfiles/openai_sdk.py --scenario scenarios/demo.yaml --headless

Events are counted as in `vlab.client.sse`: the first chunk with a choice is the first choice event, every chunk
with a choice except chat's role-only first chunk is a token event (the first is TTFT); usage comes from the usage
chunk.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from gevent import GreenletExit

from vlab.client.sse import StreamResult
from vlab.client.stream import RawStream
from vlab.core.records import ErrorKind
from vlab.locust.user import LLMUser, Request, Sent, record_result


class OpenAISDKUser(LLMUser):
    """`LLMUser` with the `openai` SDK (sync client, gevent-patched sockets) in place of the suite's raw stream."""

    client_label = "openai-sdk"
    client_warning = (
        "this run streams through the openai SDK (locustfiles/openai_sdk.py), a comparison path: its stamps include "
        "the SDK's per-chunk decoding, and one process saturates far below the suite's token rate; measure with "
        "locustfiles/llm.py"
    )

    def on_start(self) -> None:
        super().on_start()  # its StreamConnection never connects: the SDK keeps its own connection pool
        import openai

        from vlab.client.openai_sdk import make_client

        api = self.ctx.scenario.api
        self.client = make_client(
            self.host or self.ctx.host,
            openai.Timeout(api.read_timeout_s, connect=api.connect_timeout_s),
            api_key=self.ctx.creds.api_key or "EMPTY",
            headers=self.ctx.creds.headers,
        )

    def on_stop(self) -> None:
        self.client.close()

    def send(self, request: Request, want_text: bool = False) -> Sent:
        ctx = self.ctx
        raw = RawStream()
        level_index = request.level.index if request.level is not None else -1
        request.request_id = request.request_id or ctx.next_request_id()
        ctx.tracker.started(raw)
        result = StreamResult(status=0)
        texts: list[str] = []
        try:
            _stream(self.client, ctx.scenario.api.endpoint, request, raw, result, texts)
        except GreenletExit:
            ctx.tracker.finished(raw, level_index)
            record_result(ctx, raw, result, request, cut_off=True)
            raise
        except Exception as exc:
            result.error_kind, result.error = _classify(exc, got_data=result.first_choice_stamp is not None)
            result.status = getattr(exc, "status_code", result.status)
            raw.error_kind = result.error_kind
        ctx.tracker.finished(raw, level_index)
        raw.status = result.status
        if want_text:
            result.text = "".join(texts)
        assert ctx.finisher is not None
        return Sent(raw, ctx.finisher.submit(functools.partial(record_result, ctx, raw, result, request)))


def _stream(
    client: Any, endpoint: str, request: Request, raw: RawStream, result: StreamResult, texts: list[str]
) -> None:
    """Send the suite's exact JSON body through the SDK; stamp each chunk as the SDK yields it."""
    body = json.loads(request.prepared.body)
    body.pop("stream", None)
    model = body.pop("model")
    if endpoint == "chat":
        create, field = client.chat.completions.create, {"messages": body.pop("messages")}
    else:
        create, field = client.completions.create, {"prompt": body.pop("prompt")}
    raw.t_send_wall = time.time()
    raw.t_send = time.perf_counter()
    headers = {"X-Request-Id": request.request_id}
    chunks = create(
        model=model, stream=True, extra_body=body, extra_headers=headers, **field
    )  # max_tokens, stream_options, ignore_eos…
    result.status = 200
    for chunk in chunks:
        stamp = time.perf_counter()
        if chunk.usage is not None:
            result.prompt_tokens = int(chunk.usage.prompt_tokens or -1)
            result.completion_tokens = int(chunk.usage.completion_tokens or -1)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if result.first_choice_stamp is None:
            result.first_choice_stamp = stamp
        delta = getattr(choice, "delta", None)
        text = (delta.content if delta is not None else choice.text) or ""
        generated = text or any(getattr(delta, k, None) for k in ("reasoning", "reasoning_content", "tool_calls"))
        role_only = delta is not None and delta.role and not generated and not result.token_stamps
        if not role_only:
            result.token_stamps.append(stamp)
            texts.append(text)
        if choice.finish_reason:
            result.finish_reason = str(choice.finish_reason)
    result.done = True
    raw.complete = True


def _classify(exc: Exception, got_data: bool) -> tuple[str, str]:
    """The suite's error kind for an SDK exception (before the stream: openai's; mid-stream: httpx's)."""
    import httpx
    import openai

    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ErrorKind.READ_TIMEOUT, message
    if isinstance(exc, openai.APIStatusError):
        kind = ErrorKind.RATE_LIMITED if exc.status_code == 429 else ErrorKind.HTTP
        return kind, f"HTTP {exc.status_code}: {message}"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return (ErrorKind.STREAM_CUT if got_data else ErrorKind.CONNECT), message
    return ErrorKind.CLIENT, f"{type(exc).__name__}: {message}"
