"""A fast fake OpenAI-compatible SSE server, used only to measure load-generating clients.

It streams like vLLM behind uvicorn: HTTP/1.1 chunked transfer, one chunk (one `send`) per SSE event. Chat: a
role chunk, one chunk per token (finish_reason on the last), a usage chunk with `"choices":[]` when
`stream_options.include_usage`, then `data: [DONE]`. Completions: the same without the role chunk.

Pacing (`--mode`):

- `staggered`: each stream on its own timer: first token one interval after the request arrived, then one per
  interval (absolute schedule, no drift);
- `lockstep`: one global tick every interval, on which every open stream gets its next token (a decode step);
- `bulk`: no interval: every event is written as soon as the socket accepts it (flow control only).

The true send time of every event (`time.perf_counter_ns()` right before the write; CLOCK_MONOTONIC on Linux, so
comparable across processes on one machine) is kept per request and served at `GET /events` (JSON), and written to
`--events-out` at shutdown. Each request gets a server id (1, 2, ...), reported to the client as
`usage.prompt_tokens` (unless `--true-prompt-tokens`): the suite records that field in requests.csv, which is how a
client's per-request token times are matched to the server's send times without changing the client.

Edge cases, for comparing what load tools report with the truth (`bench/peers`): `--tokens-per-event K` (each
content event carries K tokens), `--ttft-ms` (staggered: arrival to first token), `--role-first` (chat: the role
chunk at once, before any token), `--stall-ms MS --stall-after N` (staggered: a silence inside each stream),
`--cut-after N` (abort each stream after N token events), `--status CODE --status-every N` (answer every N-th
completion request with CODE and vLLM's JSON error body; `--retry-after S` adds that header). `/events` then also
says, per request, its HTTP `status` and the `tokens` it carried.

Reasoning streams: `--reasoning N` makes the first N token events of each chat stream reasoning deltas (field
`--reasoning-field`: `reasoning`, vLLM's current name, or the older `reasoning_content`), the rest answer content,
as vLLM streams with a reasoning parser. `POST /v1/responses` streams the Responses API's typed events as vLLM does
(`response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, one
`response.output_text.delta` per token — `response.reasoning_text.delta` for the first N with `--reasoning` — then
the `.done` events and `response.completed` with `usage`; `max_output_tokens` sets the length).

Also serves `GET /v1/models` (id `fake`, max_model_len 4096), `GET /health`, `GET /version`, `POST /tokenize`
(one token per word; `token_strs` in GPT-2 style, so the suite's vocabulary calibration works), `GET /stats`.

    python vlab/testing/fake_sse_server.py --port 8901 --mode lockstep --interval-ms 20 --cpu 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from array import array
from dataclasses import dataclass, field

_WORDS = "the quick brown fox jumps over a lazy dog while some other words keep the stream going on".split()
_TOKEN_RE = re.compile(r" ?[^\s]+|\n")


@dataclass(slots=True)
class Options:
    """Server behaviour. Times in milliseconds."""

    mode: str = "staggered"
    interval_ms: float = 20.0
    tokens: int = 0
    """Tokens per request; 0 honours the request's max_tokens (default 16 when absent)."""
    usage: bool = True
    """Send the usage chunk when the request asks for it (stream_options.include_usage)."""
    true_prompt_tokens: bool = False
    """Report the prompt's word count as usage.prompt_tokens instead of the server's request id."""
    keep_events: bool = True
    # Edge cases (for comparing what load tools report against the truth; see bench/peers):
    tokens_per_event: int = 1
    """Tokens carried by each content event (the last may carry fewer); usage still counts every token."""
    ttft_ms: float | None = None
    """Staggered: delay from the request's arrival to its first token (default: one interval)."""
    role_first: bool = False
    """Chat: send the role chunk (empty content) at once on arrival instead of with the first token."""
    stall_ms: float = 0.0
    stall_after: int = 0
    """Staggered: after `stall_after` token events, go silent for an extra `stall_ms` before the next one."""
    cut_after: int = 0
    """Abort the connection (no terminal chunk, no usage, no [DONE]) after this many token events; 0 = never."""
    status: int = 0
    status_every: int = 1
    retry_after: float | None = None
    """Seconds for a `Retry-After` header on those error answers (None: no header)."""
    """Answer every `status_every`-th completion request with HTTP `status` and a vLLM-style JSON error; 0 = never."""
    reasoning: int = 0
    """Chat and Responses streams: the first this many token events are reasoning, the rest the answer."""
    reasoning_field: str = "reasoning"
    """Chat: the delta field of reasoning text (`reasoning`, or the older `reasoning_content`)."""


@dataclass(slots=True)
class Stream:
    """One streamed response in progress. Stamps are perf_counter_ns."""

    rid: int
    conn: Conn
    events: list[bytes]
    """Framed HTTP chunks; `first_token` is the index of the first token chunk, `n_tokens` token chunks follow
    (token *events*: with `tokens_per_event` > 1 each carries several tokens)."""
    first_token: int
    n_tokens: int
    arrival_ns: int
    pos: int = 0
    n_total: int = 0
    """Tokens in the whole response (usage.completion_tokens)."""
    stamps: array = field(default_factory=lambda: array("q"))
    """Send stamp of every event in `events` that carries a choice (role chunk included), in order."""
    handle: asyncio.TimerHandle | None = None
    t0: float = 0.0
    """Loop time of arrival (staggered schedule), seconds."""


class Server:
    """State shared by all connections: options, open streams, the event log."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.loop = asyncio.get_event_loop()
        self.next_rid = 1
        self.active: list[Stream] = []  # lockstep: streams that get a token on the next tick
        self.log: dict[int, dict] = {}
        self.tick_task: asyncio.Task | None = None
        self.events_sent = 0

    # ----------------------------------------------------------------------------------------------- streaming
    def start_stream(self, conn: Conn, body: dict, chat: bool, responses: bool = False) -> None:
        rid = self.next_rid
        self.next_rid += 1
        limit = (
            body.get("max_output_tokens") if responses else body.get("max_tokens") or body.get("max_completion_tokens")
        )
        n = self.opts.tokens or int(limit or 16)
        if responses:
            given = body.get("input", "")
            prompt_text = given if isinstance(given, str) else " ".join(str(m.get("content", "")) for m in given)
        elif chat:
            prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
        else:
            prompt_text = str(body.get("prompt", ""))
        prompt_tokens = len(prompt_text.split()) if self.opts.true_prompt_tokens else rid
        include_usage = self.opts.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        per_event = max(1, self.opts.tokens_per_event)
        reasoning = (self.opts.reasoning, self.opts.reasoning_field) if chat or responses else (0, "")
        if responses:
            events, head = render_response_events(rid, n, prompt_tokens, self.opts.reasoning), RESPONSE_HEAD_EVENTS
        else:
            events, head = render_events(rid, n, chat, include_usage, prompt_tokens, per_event, reasoning), int(chat)
        n_events = n if responses else -(-n // per_event)
        stream = Stream(rid, conn, events, head, n_events, time.perf_counter_ns(), n_total=n)
        conn.stream = stream
        conn.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\nserver: fake-sse\r\n\r\n"
        )
        if chat and self.opts.role_first:  # the role chunk on arrival, before any token
            stream.stamps.append(time.perf_counter_ns())
            conn.transport.write(events[0])
            stream.pos = 1
        mode = self.opts.mode
        if mode == "bulk":
            self.pump_bulk(stream)
        elif mode == "lockstep":
            self.active.append(stream)
        else:
            stream.t0 = self.loop.time()
            stream.handle = self.loop.call_at(self.due(stream, 0), self.tick_one, stream)

    def send_step(self, stream: Stream) -> bool:
        """Send one decode step of `stream` (role chunk with the first token; the tail after the last token).

        Returns True when the stream is finished.
        """
        write = stream.conn.transport.write
        events, stamps = stream.events, stream.stamps
        pos = stream.pos
        while pos < stream.first_token:  # role chunk (Responses: its opening events), with the first token (vLLM)
            stamps.append(time.perf_counter_ns())
            write(events[pos])
            pos += 1
        stamps.append(time.perf_counter_ns())
        write(events[pos])
        pos += 1
        if self.opts.cut_after and pos - stream.first_token >= self.opts.cut_after:
            stream.conn.transport.abort()  # mid-stream: no terminal chunk, no usage, no [DONE]
            stream.conn.closed = True
            self.finish(stream)
            return True
        end = stream.first_token + stream.n_tokens
        if pos >= end:  # usage chunk, [DONE], terminal chunk: right after the last token
            for tail in events[pos:]:
                write(tail)
            self.finish(stream)
            return True
        stream.pos = pos
        return False

    def tick_one(self, stream: Stream) -> None:
        if stream.conn.closed:
            self.finish(stream)
            return
        if not self.send_step(stream):
            stream.handle = self.loop.call_at(self.due(stream, stream.pos - stream.first_token), self.tick_one, stream)

    def due(self, stream: Stream, k: int) -> float:
        """Staggered: loop time of token event k (0-based), an absolute schedule (no drift): arrival + TTFT +
        k × interval, plus the stall for every event after `stall_after`."""
        opts = self.opts
        ttft = opts.interval_ms if opts.ttft_ms is None else opts.ttft_ms
        stall = opts.stall_ms if opts.stall_ms and k >= opts.stall_after else 0.0
        return stream.t0 + (ttft + k * opts.interval_ms + stall) / 1000.0

    async def lockstep(self) -> None:
        interval = self.opts.interval_ms / 1000.0
        loop = self.loop
        due = loop.time() + interval
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due += interval
            if loop.time() > due:  # fell more than a tick behind: do not burst to catch up
                due = loop.time() + interval
            batch, self.active = self.active, []
            keep = []
            for stream in batch:
                if stream.conn.closed:
                    self.finish(stream)
                elif not self.send_step(stream):
                    keep.append(stream)
            self.active = keep + self.active

    def pump_bulk(self, stream: Stream) -> None:
        """Write events until the transport asks us to pause (resumed by `Conn.resume_writing`)."""
        conn = stream.conn
        while not conn.paused and not conn.closed:
            if self.send_step(stream):
                return

    def finish(self, stream: Stream) -> None:
        if stream.handle is not None:
            stream.handle.cancel()
            stream.handle = None
        conn = stream.conn
        if conn.stream is stream:
            conn.stream = None
        self.events_sent += len(stream.stamps)
        if self.opts.keep_events:
            first = stream.first_token
            token_ns = stream.stamps[first:].tolist()
            per_event = max(1, self.opts.tokens_per_event)
            self.log[stream.rid] = {
                "rid": stream.rid,
                "arrival_ns": stream.arrival_ns,
                "role_ns": stream.stamps[0] if first and stream.stamps else None,
                "token_ns": token_ns,
                "complete": len(stream.stamps) - first == stream.n_tokens and not stream.conn.closed,
                "status": 200,
                "tokens": min(len(token_ns) * per_event, stream.n_total),
            }

    def refuse(self, conn: Conn) -> None:
        """Answer with the configured error status, vLLM's error body, and log it as a failed request."""
        rid = self.next_rid
        self.next_rid += 1
        status = self.opts.status
        kind = {429: "TooManyRequests", 500: "InternalServerError"}.get(status, "Error")
        error = {"message": f"fake-sse: injected {status}", "type": kind, "param": None, "code": status}
        retry = f"retry-after: {self.opts.retry_after:g}\r\n" if self.opts.retry_after is not None else ""
        conn.respond(status, {"error": error}, retry)
        if self.opts.keep_events:
            self.log[rid] = {"rid": rid, "arrival_ns": time.perf_counter_ns(), "role_ns": None, "token_ns": [],
                             "complete": False, "status": status, "tokens": 0}  # fmt: skip

    # -------------------------------------------------------------------------------------------------- others
    def handle(self, conn: Conn, method: str, path: str, body: bytes) -> None:
        path = path.split("?", 1)[0]
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                conn.respond(400, {"error": {"message": "body is not JSON"}})
                return
            chat = path == "/v1/chat/completions"
            if self.opts.status and self.next_rid % max(1, self.opts.status_every) == 0:
                self.refuse(conn)
                return
            if not req.get("stream"):
                conn.respond(400, {"error": {"message": "this fake server only streams"}})
                return
            self.start_stream(conn, req, chat, responses=path == "/v1/responses")
        elif method == "GET" and path == "/v1/models":
            conn.respond(
                200,
                {
                    "object": "list",
                    "data": [{"id": "fake", "object": "model", "owned_by": "bench", "max_model_len": 4096}],
                },
            )
        elif method == "GET" and path == "/health":
            conn.respond(200, None)
        elif method == "GET" and path == "/version":
            conn.respond(200, {"version": "fake-sse"})
        elif method == "POST" and path == "/tokenize":
            req = json.loads(body or b"{}")
            text = req.get("prompt")
            if text is None:
                text = "\n".join(str(m.get("content", "")) for m in req.get("messages") or [])
            toks = _TOKEN_RE.findall(text)
            strs = ["Ċ" if t == "\n" else t.replace(" ", "Ġ") for t in toks]
            words = [s for s in strs if s != "Ċ"]
            answer: dict = {"count": len(words), "max_model_len": 4096, "tokens": list(range(len(words)))}
            if req.get("return_token_strs"):
                answer["token_strs"] = strs
            conn.respond(200, answer)
        elif method == "GET" and path == "/events":
            conn.respond(200, {"requests": list(self.log.values())})
        elif method == "POST" and path == "/events/clear":
            self.log.clear()
            conn.respond(200, {"cleared": True})
        elif method == "GET" and path == "/stats":
            t = os.times()
            conn.respond(
                200,
                {
                    "cpu_s": t.user + t.system,
                    "mono_s": time.perf_counter(),
                    "events_sent": self.events_sent,
                    "open_streams": len(self.active),
                    "requests": self.next_rid - 1,
                },
            )
        else:
            conn.respond(404, {"error": {"message": f"no route {method} {path}"}})


def render_events(
    rid: int,
    n: int,
    chat: bool,
    include_usage: bool,
    prompt_tokens: int,
    per_event: int = 1,
    reasoning: tuple[int, str] = (0, ""),
) -> list[bytes]:
    """Every chunk of one response, framed for chunked transfer, in send order (`per_event` tokens per content
    event, the last one carrying the rest; chat: the first `reasoning[0]` token events carry their text in the delta
    field `reasoning[1]` instead of `content`)."""
    created = int(time.time())
    if chat:
        head = f'{{"id":"chatcmpl-{rid:012d}","object":"chat.completion.chunk","created":{created},"model":"fake",'
    else:
        head = f'{{"id":"cmpl-{rid:012d}","object":"text_completion","created":{created},"model":"fake",'
    out: list[bytes] = []
    if chat:
        out.append(
            _sse(
                head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                '"finish_reason":null}]}'
            )
        )
    for i in range(0, n, per_event):
        word = json.dumps("".join(" " + _WORDS[(rid + j) % len(_WORDS)] for j in range(i, min(n, i + per_event))))
        finish = '"length"' if i + per_event >= n else "null"
        if chat:
            key = reasoning[1] if i // per_event < reasoning[0] else "content"
            choice = f'{{"index":0,"delta":{{"{key}":{word}}},"logprobs":null,"finish_reason":{finish}}}'
        else:
            choice = f'{{"index":0,"text":{word},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}'
        out.append(_sse(head + f'"choices":[{choice}]}}'))
    if include_usage:
        usage = f'{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens + n},"completion_tokens":{n}}}'
        out.append(_sse(head + f'"choices":[],"usage":{usage}}}'))
    out.append(_sse("[DONE]"))
    out.append(b"0\r\n\r\n")
    return out


RESPONSE_HEAD_EVENTS = 4
"""Responses API events before the first delta: created, in_progress, output_item.added, content_part.added."""


def render_response_events(rid: int, n: int, prompt_tokens: int, reasoning: int = 0) -> list[bytes]:
    """Every chunk of one streamed `/v1/responses` answer in send order: the opening events, one delta per token
    (the first `reasoning` of them `response.reasoning_text.delta`), the `.done` events, `response.completed`."""
    seq = iter(range(1_000_000))
    resp = f'"id":"resp_{rid:012d}","object":"response","model":"fake","created_at":{int(time.time())}'
    item = f'"item_id":"msg_{rid:012d}","output_index":0,"content_index":0'

    def event(kind: str, body: str) -> bytes:
        return _sse(f'{{{body},"sequence_number":{next(seq)},"type":"{kind}"}}', event=kind)

    out = [
        event("response.created", f'"response":{{{resp},"status":"in_progress","output":[],"usage":null}}'),
        event("response.in_progress", f'"response":{{{resp},"status":"in_progress","output":[],"usage":null}}'),
        event(
            "response.output_item.added",
            f'"item":{{"id":"msg_{rid:012d}","type":"message","role":"assistant",'
            '"status":"in_progress","content":[]},"output_index":0',
        ),
        event("response.content_part.added", f'{item},"part":{{"type":"output_text","text":"","annotations":[]}}'),
    ]
    words = [" " + _WORDS[(rid + j) % len(_WORDS)] for j in range(n)]
    for j, word in enumerate(words):
        kind = "response.reasoning_text.delta" if j < reasoning else "response.output_text.delta"
        out.append(event(kind, f'{item},"delta":{json.dumps(word)}'))
    text = json.dumps("".join(words[reasoning:]))
    out.append(event("response.output_text.done", f'{item},"text":{text}'))
    out.append(event("response.output_item.done", f'"item":{{"id":"msg_{rid:012d}","type":"message","status":'
                     f'"completed","content":[{{"type":"output_text","text":{text}}}]}},"output_index":0'))  # fmt: skip
    usage = f'"usage":{{"input_tokens":{prompt_tokens},"output_tokens":{n},"total_tokens":{prompt_tokens + n}}}'
    out.append(event("response.completed", f'"response":{{{resp},"status":"incomplete","incomplete_details":'
                     f'{{"reason":"max_output_tokens"}},{usage}}}'))  # fmt: skip
    out.append(b"0\r\n\r\n")
    return out


def _sse(data: str, event: str = "") -> bytes:
    payload = (f"event: {event}\n" if event else "").encode() + b"data: " + data.encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Conn(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, one request at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.stream: Stream | None = None
        self.paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None and self.server.opts.mode == "staggered":
            self.server.finish(self.stream)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.stream is not None and self.server.opts.mode == "bulk":
            self.server.pump_bulk(self.stream)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            self.server.handle(self, method, path, body)

    def respond(self, status: int, obj: object, extra_headers: str = "") -> None:
        body = b"" if obj is None else json.dumps(obj).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "OK")  # fmt: skip
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (status, reason.encode(), len(body), extra_headers.encode(), body)
        )


async def serve(opts: Options, host: str, port: int, events_out: str | None, ready_file: str | None) -> None:
    server = Server(opts)
    aserver = await server.loop.create_server(lambda: Conn(server), host, port, backlog=2048, reuse_address=True)
    if opts.mode == "lockstep":
        server.tick_task = asyncio.ensure_future(server.lockstep())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        server.loop.add_signal_handler(sig, stop.set)
    bound = aserver.sockets[0].getsockname()[1]
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(str(bound))
    print(f"fake-sse: listening on http://{host}:{bound} mode={opts.mode} interval={opts.interval_ms} ms", flush=True)
    await stop.wait()
    aserver.close()
    if events_out:
        with open(events_out, "w") as fh:
            json.dump({"requests": list(server.log.values())}, fh)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901, help="0 picks a free port (see --ready-file).")
    parser.add_argument("--mode", choices=("staggered", "lockstep", "bulk"), default="staggered")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="Token interval, ms (not for bulk).")
    parser.add_argument("--tokens", type=int, default=0, help="Tokens per request; 0 honours max_tokens.")
    parser.add_argument("--no-usage", action="store_true", help="Never send the usage chunk.")
    parser.add_argument("--true-prompt-tokens", action="store_true", help="usage.prompt_tokens = word count.")
    parser.add_argument("--no-events", action="store_true", help="Do not keep per-event send stamps.")
    parser.add_argument("--events-out", help="Write the send stamps (JSON) here at shutdown.")
    parser.add_argument("--ready-file", help="Write the bound port here once listening.")
    parser.add_argument("--tokens-per-event", type=int, default=1, help="Tokens carried by each content event.")
    parser.add_argument("--ttft-ms", type=float, default=None, help="Staggered: arrival to first token (ms).")
    parser.add_argument("--role-first", action="store_true", help="Chat: role chunk on arrival, before any token.")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="Staggered: extra silence inside each stream.")
    parser.add_argument("--stall-after", type=int, default=0, help="... after this many token events.")
    parser.add_argument("--cut-after", type=int, default=0, help="Abort each stream after N token events.")
    parser.add_argument("--status", type=int, default=0, help="Answer completion requests with this HTTP status.")
    parser.add_argument("--status-every", type=int, default=1, help="... every N-th request only.")
    parser.add_argument("--retry-after", type=float, help="... with a Retry-After header of this many seconds.")
    parser.add_argument(
        "--reasoning", type=int, default=0, help="First N token events are reasoning (chat, responses)."
    )
    parser.add_argument("--reasoning-field", choices=("reasoning", "reasoning_content"), default="reasoning")
    parser.add_argument("--cpu", type=int, default=None, help="Pin the process to this core.")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    opts = Options(
        mode=args.mode,
        interval_ms=args.interval_ms,
        tokens=args.tokens,
        usage=not args.no_usage,
        true_prompt_tokens=args.true_prompt_tokens,
        keep_events=not args.no_events,
        tokens_per_event=args.tokens_per_event,
        ttft_ms=args.ttft_ms,
        role_first=args.role_first,
        stall_ms=args.stall_ms,
        stall_after=args.stall_after,
        cut_after=args.cut_after,
        status=args.status,
        status_every=args.status_every,
        retry_after=args.retry_after,
        reasoning=args.reasoning,
        reasoning_field=args.reasoning_field,
    )
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve(opts, args.host, args.port, args.events_out, args.ready_file))


if __name__ == "__main__":
    main()
