"""The Locust user that streams completions and measures every token event.

Each request: wait for the level gate (closed while a level drains), take an arrival ticket (open loop only),
build the body, send it on the user's own keep-alive connection (`vlab.client.stream`), and after the last byte
hand the stamped reads to the process's finisher (`vlab.locust.finisher`), which turns them into a `RequestRecord`
plus token times (`vlab.client.sse`, `vlab.core.metrics`) between other streams' reads.

Locust sees one request event per request, named after the endpoint, with the end-to-end latency as its response
time: its console, "Aggregated" row and `--csv` count each request once. The exact TTFT/ITL/TPOT numbers are the run's
own CSVs (and the web UI's LLM tab).

A user class prepares the process once before any load through `prepare(ctx)` (the plugin calls it for every user
class of the run): this one needs nothing; the RAG user opens its retriever there.
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

from vlab.client.backoff import wait_after
from vlab.client.sse import StreamResult, parse_response
from vlab.client.stream import RawStream, StreamConnection
from vlab.core.metrics import PhaseTiming, RequestTiming
from vlab.core.records import ErrorKind, RequestRecord
from vlab.core.runfolder import Level
from vlab.locust.context import RunContext, context
from vlab.locust.workload import PreparedRequest

log = logging.getLogger("vlab")


def open_connection(ctx: RunContext, host: str | None) -> StreamConnection:
    """A user's own keep-alive connection, with the scenario's timeouts and the run's credentials."""
    api = ctx.scenario.api
    return StreamConnection(
        host or ctx.host,
        connect_timeout_s=api.connect_timeout_s,
        read_timeout_s=api.read_timeout_s,
        api_key=ctx.creds.api_key,
        headers=ctx.creds.headers,
    )


@dataclass(slots=True)
class Request:
    """What a request was sent with: everything its record needs besides the stream itself."""

    prepared: PreparedRequest
    user_index: int
    level: Level | None
    """The load level in force at the send."""
    queue_wait_ms: float = 0.0
    waited_for_slot: bool = False
    retrieval_ms: float = math.nan
    due: float | None = None
    """Open loop: the perf_counter instant its arrival was scheduled (the ticket's); None in closed loop."""
    request_id: str = ""
    """`{node}-{n}`, given at the send and sent as `X-Request-Id`: the record, the server's logs and a proxy's
    count name the same request."""


@dataclass(slots=True)
class Sent:
    """A request whose stream has ended; the process's finisher turns it into a record (`vlab.locust.finisher`)."""

    raw: RawStream
    finished: AsyncResult

    def result(self) -> StreamResult:
        """What the stream contained: waits until the finisher has parsed and recorded it."""
        return self.finished.get()


def measure(ctx: RunContext, conn: StreamConnection, request: Request, *, want_text: bool = False) -> Sent:
    """Send one request and read its stream on this greenlet; hand the rest (parse, record, sink, Locust event)
    to the finisher, so that the next request can go at once and no burst of parsing delays other streams' reads."""
    raw = RawStream()
    client_error = ""
    finish = functools.partial(_finish, ctx, raw, request, want_text=want_text)
    tracker = ctx.tracker
    level_index = request.level.index if request.level is not None else -1
    request.request_id = request.request_id or ctx.next_request_id()
    tracker.started(raw)
    try:
        conn.post(ctx.scenario.api.path, request.prepared.body, raw, request_id=request.request_id)
    except GreenletExit:
        conn.close()  # the run stopped while this request was in flight: record it as cut off, then stop
        tracker.finished(raw, level_index)
        finish(cut_off=True)
        raise
    except Exception as exc:  # a bug in the client: recorded and logged, never lost or hidden
        conn.close()
        client_error = f"{type(exc).__name__}: {exc}"
        log.exception("vlab: client error")
    tracker.finished(raw, level_index)
    assert ctx.finisher is not None
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
        result = parse_response(
            raw, ctx.scenario.api.endpoint, want_text=want_text, require_done=ctx.scenario.api.require_done
        )
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
        _fire_locust_event(ctx, record)
    return result


def to_record(
    ctx: RunContext, raw: RawStream, result: StreamResult, request: Request
) -> tuple[RequestRecord, tuple[float, ...]]:
    """The record and token times (ms since send) of one ended stream; `result` decides ok and the error kind."""
    prepared, level = request.prepared, request.level
    timing = None
    if not result.streamed:
        if result.end_stamp is not None:
            timing = RequestTiming.unstreamed(raw.t_send, result.end_stamp)
    elif result.first_choice_stamp is not None:
        timing = RequestTiming.from_stamps(raw.t_send, result.first_choice_stamp, result.token_stamps)
    n_events = len(result.token_stamps)
    ok = result.ok and timing is not None and (n_events > 0 or not result.streamed)
    error_kind, error = result.error_kind, result.error
    if result.ok and not ok:
        error_kind, error = ErrorKind.MALFORMED, "stream carried no token"
    completion = result.completion_tokens
    phases = PhaseTiming.from_events(timing.token_times_ms, result.event_kinds) if timing else None
    sent = raw.t_send if raw.t_send else None
    record = RequestRecord(
        request_id=request.request_id or ctx.next_request_id(),
        level=level.index if level else -1,
        level_target=level.target if level else math.nan,
        user=request.user_index,
        node=ctx.node,
        endpoint=ctx.scenario.api.endpoint,
        t_start_s=raw.t_send_wall or time.time(),
        queue_wait_ms=request.queue_wait_ms,
        waited_for_slot=request.waited_for_slot,
        schedule_lag_ms=(sent - request.due) * 1000.0 if sent is not None and request.due is not None else math.nan,
        trace_line=prepared.trace_line,
        first_chunk_ms=timing.first_chunk_ms if timing else math.nan,
        ttft_ms=timing.ttft_ms if timing else math.nan,
        e2e_ms=timing.e2e_ms if timing else math.nan,
        itl_mean_ms=timing.itl_mean_ms if timing else math.nan,
        tpot_ms=timing.tpot_ms(completion if completion > 0 else n_events) if timing and n_events else math.nan,
        ttfr_ms=phases.ttfr_ms if phases else math.nan,
        ttfa_ms=phases.ttfa_ms if phases else math.nan,
        reasoning_tokens=phases.reasoning_tokens if phases else math.nan,
        answer_tokens=phases.answer_tokens if phases else math.nan,
        itl_reasoning_ms=phases.itl_reasoning_ms if phases else math.nan,
        itl_answer_ms=phases.itl_answer_ms if phases else math.nan,
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


def _fire_locust_event(ctx: RunContext, record: RequestRecord) -> None:
    """One Locust request event per request: response time = E2E (ms), length = output tokens."""
    elapsed = record.e2e_ms if not math.isnan(record.e2e_ms) else (time.time() - record.t_start_s) * 1000.0
    ctx.environment.events.request.fire(
        request_type="POST",
        name=ctx.scenario.api.path,
        response_time=elapsed,
        response_length=max(record.completion_tokens, record.n_events) if record.ok else 0,
        exception=None if record.ok else RuntimeError(f"{record.error_kind}: {record.error}"),
    )


class LLMUser(User):
    """Streams completions from the scenario's endpoint; closed loop (next request at once) or open loop (waits
    for an arrival ticket)."""

    wait_time = constant(0)
    client_label = "suite"
    """What streams and stamps the tokens (run.json `client`); anything but "suite" is a comparison path."""
    client_warning = ""
    """Said on the terminal and in the report when a run uses this class."""

    @classmethod
    def prepare(cls, ctx: RunContext) -> None:
        """Prepare this process for the class's users, once, before any load (raise `UserError` to refuse)."""

    def on_start(self) -> None:
        self.ctx = context()
        if self.ctx.start_error is not None:  # refused at start (said in one line): `generate` stops this user
            return
        self.user_index = self.ctx.next_user_index()
        self.conn = open_connection(self.ctx, self.host)
        self.history: list[dict[str, str]] = []
        self.turns: list[str] = []
        self.system: str | None = None
        self._failures_in_a_row = 0

    def on_stop(self) -> None:
        conn = getattr(self, "conn", None)  # absent when on_start refused to start
        if conn is not None:
            conn.close()

    def next_request(self, history: list[dict[str, str]] | None = None) -> PreparedRequest:
        """The next request's body (synthetic, dataset or, in subclasses, retrieved)."""
        assert self.ctx.factory is not None
        return self.ctx.factory.next_request()

    @task
    def generate(self) -> None:
        ctx = self.ctx
        if ctx.factory is None or ctx.start_error is not None:  # start-up failed (already reported): stop
            self.stop()
            return
        queue_wait_ms, waited, due, row = 0.0, False, None, -1
        if ctx.schedule is None:
            ctx.tracker.gate.wait()  # closed loop: no request starts while a level drains
        else:  # open loop: the schedule decides; tickets already issued belong to their level and are sent
            ticket = ctx.schedule.take()
            queue_wait_ms, waited = max(0.0, (time.perf_counter() - ticket.due) * 1000.0), ticket.all_busy
            due, row = ticket.due, ticket.row
        dataset = ctx.scenario.data.dataset
        if dataset is not None and dataset.multi_turn:
            self._next_turn(queue_wait_ms, waited, due)
            return
        prepared = ctx.factory.trace_request(row) if row >= 0 else self.next_request()
        sent = self.send(Request(prepared, self.user_index, ctx.tracker.current, queue_wait_ms, waited, due=due))
        self._back_off_if_unreachable(sent.raw)

    def send(self, request: Request, want_text: bool = False) -> Sent:
        """Send one request and have it recorded (`measure`)."""
        return measure(self.ctx, self.conn, request, want_text=want_text)

    def _back_off_if_unreachable(self, raw: RawStream) -> None:
        """A closed-loop user whose request was refused before any stream waits before trying again
        (`vlab.client.backoff.wait_after`: refused connection, Retry-After, or a doubling back-off). Open-loop
        arrivals keep their schedule: that is what open loop means."""
        if self.ctx.schedule is not None:
            return
        wait = wait_after(raw.error_kind, raw.status, raw.headers.get("retry-after"), self._failures_in_a_row)
        if wait is None:
            self._failures_in_a_row = 0
            return
        if raw.error_kind != ErrorKind.CONNECT:
            self._failures_in_a_row += 1
        gevent.sleep(wait)

    def _next_turn(self, queue_wait_ms: float, waited: bool, due: float | None) -> None:
        """Multi-turn chat: replay one conversation's human turns, keeping the real answers as history."""
        factory = self.ctx.factory
        assert factory is not None
        if not self.turns:
            conversation = factory.next_conversation()
            self.turns, self.system, self.history = [t.human for t in conversation.turns], conversation.system, []
        prompt = self.turns.pop(0)
        system = None if self.history else self.system  # the first turn carries it; history keeps it after
        prepared = factory.build(prompt, factory.draw_max_tokens(), history=self.history, system=system)
        request = Request(prepared, self.user_index, self.ctx.tracker.current, queue_wait_ms, waited, due=due)
        sent = self.send(request, want_text=True)
        self._back_off_if_unreachable(sent.raw)
        result = sent.result()
        if result.ok:
            self.history = [*prepared.messages, {"role": "assistant", "content": result.text}]
        else:
            self.turns = []  # a failed turn ends the conversation
