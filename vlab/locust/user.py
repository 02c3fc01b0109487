"""The Locust user that streams completions and measures every token event.

Each request: take an arrival ticket (open loop only), build the body, send it on the user's own keep-alive
connection (`vlab.client.stream`), and after the last byte hand the stamped reads to the process's finisher
(`vlab.locust.finisher`), which turns them into a `RequestRecord` plus token times (`vlab.client.sse`, `vlab.core.metrics`) between
other streams' reads. Three Locust request events per request (TTFT, ITL mean, and the request itself as
E2E) feed Locust's console, web UI and `--csv`; the exact numbers are the run's own CSVs.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import gevent
from gevent import GreenletExit
from gevent.event import AsyncResult
from locust import User, constant, task

from vlab.client.sse import StreamResult, parse_stream
from vlab.client.stream import RawStream, StreamConnection
from vlab.core.metrics import RequestTiming
from vlab.core.records import ErrorKind, RequestRecord
from vlab.locust.load import Level
from vlab.locust.plugin import RunContext, context
from vlab.locust.workload import PreparedRequest

log = logging.getLogger("vlab")

CONNECT_BACKOFF_S = 0.5
"""Pause of a closed-loop user after a refused connection, seconds."""


def open_connection(ctx: RunContext, host: str | None) -> StreamConnection:
    """A user's own keep-alive connection, with the scenario's timeouts and the run's API key."""
    api = ctx.scenario.api
    return StreamConnection(
        host or ctx.environment.host,
        connect_timeout_s=api.connect_timeout_s,
        read_timeout_s=api.read_timeout_s,
        api_key=ctx.api_key,
    )


@dataclass(slots=True)
class Request:
    """What a request was sent with: everything its record needs besides the stream itself."""

    prepared: PreparedRequest
    user_index: int
    level: Level | None
    """The load level in force at the send."""
    queue_wait_ms: float = 0.0
    retrieval_ms: float = math.nan


@dataclass(slots=True)
class Sent:
    """A request whose stream has ended; the process's finisher turns it into a record (`vlab.locust.finisher`)."""

    raw: RawStream
    finished: AsyncResult

    def result(self) -> StreamResult:
        """What the stream contained: waits until the finisher has parsed and recorded it."""
        return self.finished.get()


def measure(
    ctx: RunContext,
    conn: StreamConnection,
    prepared: PreparedRequest,
    user_index: int,
    *,
    queue_wait_ms: float = 0.0,
    retrieval_ms: float = math.nan,
    want_text: bool = False,
) -> Sent:
    """Send one request and read its stream on this greenlet; hand the rest (parse, record, sink, Locust events)
    to the finisher, so that the next request can go at once and no burst of parsing delays other streams' reads."""
    request = Request(prepared, user_index, ctx.tracker.current, queue_wait_ms, retrieval_ms)
    raw = RawStream()
    client_error = ""
    finish = functools.partial(_finish, ctx, raw, request, want_text=want_text)
    try:
        conn.post(ctx.scenario.api.path, prepared.body, raw)
    except GreenletExit:
        conn.close()  # the run stopped while this request was in flight: record it as cut off, then stop
        finish(cut_off=True)
        raise
    except Exception as exc:  # a bug in the client: recorded and logged, never lost or hidden
        conn.close()
        client_error = f"{type(exc).__name__}: {exc}"
        log.exception("vlab: client error")
    return Sent(raw, ctx.finisher.submit(functools.partial(finish, client_error=client_error)))


def _finish(
    ctx: RunContext,
    raw: RawStream,
    request: Request,
    *,
    want_text: bool,
    client_error: str = "",
    cut_off: bool = False,
) -> StreamResult:
    """Parse an ended stream, record it (sink), and report it to Locust (unless the run cut it off)."""
    try:
        result = parse_stream(raw, want_text=want_text)
    except Exception as exc:
        client_error = client_error or f"{type(exc).__name__}: {exc}"
        log.exception("vlab: client error while parsing a stream")
        result = StreamResult(status=raw.status)
    if client_error:
        result.error_kind, result.error = ErrorKind.CLIENT, client_error
    return record_result(ctx, raw, result, request, cut_off=cut_off)


def record_result(
    ctx: RunContext, raw: RawStream, result: StreamResult, request: Request, *, cut_off: bool = False
) -> StreamResult:
    """Record what a stream contained (sink) and report it to Locust, unless the run cut it off (then it is on
    disk as cut_off, and Locust's stats and exit code do not count it)."""
    if cut_off:
        result.error_kind, result.error = ErrorKind.CUT_OFF, "in flight when the run stopped"
    record, token_times = to_record(ctx, raw, result, request)
    if ctx.sink is not None:
        ctx.sink.add(record, token_times)
    if not cut_off:
        _fire_locust_events(ctx, record)
    return result


def to_record(
    ctx: RunContext, raw: RawStream, result: StreamResult, request: Request
) -> tuple[RequestRecord, tuple[float, ...]]:
    """The record and token times (ms since send) of one ended stream; `result` decides ok and the error kind."""
    prepared, level = request.prepared, request.level
    timing = None
    if result.first_choice_stamp is not None:
        timing = RequestTiming.from_stamps(raw.t_send, result.first_choice_stamp, result.token_stamps)
    n_events = len(result.token_stamps)
    ok = result.ok and timing is not None and n_events > 0
    error_kind, error = result.error_kind, result.error
    if result.ok and not ok:
        error_kind, error = ErrorKind.MALFORMED, "stream carried no token"
    completion = result.completion_tokens
    record = RequestRecord(
        request_id=ctx.next_request_id(),
        level=level.index if level else -1,
        level_target=level.target if level else math.nan,
        user=request.user_index,
        node=ctx.node,
        endpoint=ctx.scenario.api.endpoint,
        t_start_s=raw.t_send_wall or time.time(),
        queue_wait_ms=request.queue_wait_ms,
        ttft_ms=timing.ttft_ms if timing else math.nan,
        e2e_ms=timing.e2e_ms if timing else math.nan,
        itl_mean_ms=timing.itl_mean_ms if timing else math.nan,
        tpot_ms=timing.tpot_ms(completion if completion > 0 else n_events) if timing else math.nan,
        n_events=n_events,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=completion,
        prompt_tokens_requested=prepared.prompt_tokens_requested,
        max_tokens=prepared.max_tokens,
        finish_reason=result.finish_reason,
        multi_token=completion > n_events > 0,
        ok=ok,
        status=raw.status,
        error_kind="" if ok else error_kind,
        error="" if ok else error[:300],
        prefix_id=prepared.prefix_id,
        retrieval_ms=request.retrieval_ms,
    )
    return record, timing.token_times_ms if timing else ()


def _fire_locust_events(ctx: RunContext, record: RequestRecord) -> None:
    fire = ctx.environment.events.request.fire
    name = ctx.scenario.api.path
    if record.ok:
        fire(request_type="TTFT", name=name, response_time=record.ttft_ms, response_length=0, exception=None)
        if record.n_events > 1:
            fire(request_type="ITL", name=name, response_time=record.itl_mean_ms, response_length=0, exception=None)
        fire(
            request_type="POST",
            name=name,
            response_time=record.e2e_ms,
            response_length=max(record.completion_tokens, record.n_events),
            exception=None,
        )
    else:
        elapsed = record.e2e_ms if not math.isnan(record.e2e_ms) else (time.time() - record.t_start_s) * 1000.0
        fire(
            request_type="POST",
            name=name,
            response_time=elapsed,
            response_length=0,
            exception=RuntimeError(f"{record.error_kind}: {record.error}"),
        )


class LLMUser(User):
    """Streams completions from the scenario's endpoint; closed loop (next request at once) or open loop (waits
    for an arrival ticket)."""

    wait_time = constant(0)
    client_label = "suite"
    """What streams and stamps the tokens (run.json `client`); anything but "suite" is a comparison path."""
    client_warning = ""
    """Said on the terminal and in the report when a run uses this class."""

    def on_start(self) -> None:
        self.ctx = context()
        self.user_index = self.ctx.next_user_index()
        self.conn = open_connection(self.ctx, self.host)
        self.history: list[dict] = []
        self.turns: list[str] = []

    def on_stop(self) -> None:
        self.conn.close()

    @task
    def generate(self) -> None:
        ctx = self.ctx
        if ctx.factory is None:  # start-up failed (already reported): do nothing until the runner quits
            self.stop()
            return
        queue_wait_ms = 0.0
        if ctx.schedule is not None:
            due = ctx.schedule.take()
            queue_wait_ms = max(0.0, (time.perf_counter() - due) * 1000.0)
        dataset = ctx.scenario.data.dataset
        if dataset is not None and dataset.multi_turn:
            self._next_turn(queue_wait_ms)
            return
        sent = self.send(ctx.factory.next_request(), queue_wait_ms)
        self._back_off_if_unreachable(sent.raw)

    def send(self, prepared: PreparedRequest, queue_wait_ms: float, want_text: bool = False) -> Sent:
        """Send one request and have it recorded (`measure`)."""
        return measure(self.ctx, self.conn, prepared, self.user_index, queue_wait_ms=queue_wait_ms, want_text=want_text)

    def _back_off_if_unreachable(self, raw: RawStream) -> None:
        """A closed-loop user facing a server that refuses connections waits CONNECT_BACKOFF_S before trying again,
        instead of recording thousands of identical failures per second. (Open-loop arrivals keep their schedule.)"""
        if raw.error_kind == ErrorKind.CONNECT and self.ctx.schedule is None:
            gevent.sleep(CONNECT_BACKOFF_S)

    def _next_turn(self, queue_wait_ms: float) -> None:
        """Multi-turn chat: replay one conversation's human turns, keeping the real answers as history."""
        factory = self.ctx.factory
        assert factory is not None
        if not self.turns:
            self.turns, self.history = list(factory.conversation()), []
        prompt = self.turns.pop(0)
        max_tokens = factory.draw_max_tokens()
        prepared = factory.build(prompt, max_tokens, history=self.history)
        sent = self.send(prepared, queue_wait_ms, want_text=True)
        self._back_off_if_unreachable(sent.raw)
        result = sent.result()
        if result.ok:
            self.history = [*prepared.messages, {"role": "assistant", "content": result.text}]
        else:
            self.turns = []  # a failed turn ends the conversation
