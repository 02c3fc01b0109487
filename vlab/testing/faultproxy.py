"""A small fault-injecting HTTP proxy between a load generator and a real OpenAI-compatible server.

Requests pass through to the upstream server; streamed completions are re-framed event by event (one HTTP chunk
per SSE event, as vLLM sends them), which is where a `Fault` can cut the stream, stall it, inject a bad line,
drop the usage chunk or `[DONE]`, merge token events, delay every event, rewrite the model name, or answer with an
error status instead. Faults are tested against real traffic this way, not against a script.

The proxy counts the streams it relayed to the end (`completed_streams`) and keeps their `X-Request-Id`s
(`completed_ids`, in order), so a soak test can check that every completed stream is on disk exactly once. It
runs an asyncio loop in a daemon thread; `start()` returns its base URL.

    proxy = FaultProxy("http://127.0.0.1:8000").start()      # e.g. http://127.0.0.1:40123
    proxy.fault = Fault("cut", after_events=5)               # from now on, every stream is cut after 5 events
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal[
    "none", "cut", "stall", "status", "bad_line", "missing_choices", "no_done", "no_usage", "merge", "delay", "model"
]

_REASONS = {400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


@dataclass
class Fault:
    """What to do to streamed completion requests. `every` = apply to every k-th request only (1 = all)."""

    kind: FaultKind = "none"
    after_events: int = 3
    """cut / stall / bad_line / missing_choices: how many events pass first."""
    status: int = 500
    """status: the HTTP status to answer with (a vLLM-style JSON error body)."""
    delay_s: float = 0.0
    """stall: how long to go silent; delay: the extra delay before every event."""
    every: int = 1


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.host, self.port = host, port
        self.fault = Fault()
        self.completed_ids: list[str] = []
        """The `X-Request-Id` ("" without one) of each stream relayed through `data: [DONE]`, in order."""
        self.received_ids: list[str] = []
        """The `X-Request-Id` of each streamed completion request received, in order."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def completed_streams(self) -> int:
        """Streams relayed through `data: [DONE]` (or to their end, under `no_done`) to the client."""
        return len(self.completed_ids)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @contextlib.contextmanager
    def injecting(self, fault: Fault) -> Iterator[FaultProxy]:
        """Apply `fault` for the block, then relay faithfully again."""
        self.fault = fault
        try:
            yield self
        finally:
            self.fault = Fault()

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()

    def kill_connections(self) -> None:
        """Close every open client connection at once, as a server killed mid-stream would."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._abort_all(), self._loop).result(5)

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def stop(self) -> None:
        """Stop listening and close every connection (later connects are refused)."""
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            await self._abort_all()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:  # end the connection handlers cleanly instead of leaving them to be destroyed
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    # ------------------------------------------------------------------------------------------------ serving
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                streaming = (
                    method == "POST" and path.endswith("completions") and b'"stream":true' in body.replace(b" ", b"")
                )
                if streaming:
                    self.received_ids.append(headers.get("x-request-id", ""))
                    fault = self.fault
                    active = fault.kind != "none" and len(self.received_ids) % max(fault.every, 1) == 0
                    await self._stream(method, path, headers, body, writer, fault if active else Fault())
                else:
                    await self._passthrough(method, path, headers, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _open_upstream(self, method: str, path: str, headers: dict[str, str], body: bytes):
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        fwd = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.upstream_host}:{self.upstream_port}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in fwd.items()) + f"Content-Length: {len(body)}\r\n\r\n"
        up_writer.write(head.encode() + body)
        await up_writer.drain()
        status_head = await up_reader.readuntil(b"\r\n\r\n")
        lines = status_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        up_headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        return up_reader, up_writer, status, up_headers

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]):
        """Yield the upstream body's payload pieces (de-chunked)."""
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                yield data
        elif "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
        else:
            yield await reader.read()

    async def _passthrough(self, method, path, headers, body, writer) -> None:
        up_reader, up_writer, status, up_headers = await self._open_upstream(method, path, headers, body)
        payload = b"".join([piece async for piece in self._read_body(up_reader, up_headers)])
        up_writer.close()
        await self._respond(writer, status, payload, up_headers.get("content-type", "application/json"))

    async def _respond(self, writer, status: int, payload: bytes, content_type: str = "application/json") -> None:
        reason = _REASONS.get(status, "OK" if status < 400 else "Error")
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n\r\n"
        writer.write(head.encode() + payload)
        await writer.drain()

    async def _stream(self, method, path, headers, body, writer, fault: Fault) -> None:
        if fault.kind == "status":
            message = {429: "Too many requests", 503: "Service unavailable: <server overloaded>"}.get(
                fault.status, "Internal server error: injected fault <b>x</b>"
            )
            error = {"object": "error", "message": message, "type": "InjectedFault", "code": fault.status}
            await self._respond(writer, fault.status, json.dumps({"error": error}).encode())
            return
        if fault.kind == "model":
            body = _with_model(body, "model-that-does-not-exist")
        up_reader, up_writer, status, up_headers = await self._open_upstream(method, path, headers, body)
        try:
            if status != 200 or "text/event-stream" not in up_headers.get("content-type", ""):
                payload = b"".join([piece async for piece in self._read_body(up_reader, up_headers)])
                await self._respond(writer, status, payload, up_headers.get("content-type", "application/json"))
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            buffer = b""
            sent = 0
            held: bytes | None = None  # merge: an event waiting for its partner
            async for piece in self._read_body(up_reader, up_headers):
                buffer += piece
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    event += b"\n\n"
                    if fault.kind in ("cut", "stall", "bad_line", "missing_choices") and sent == fault.after_events:
                        if fault.kind == "cut":
                            writer.transport.abort()  # mid-stream, mid-token: no terminal chunk
                            return
                        if fault.kind == "stall":
                            await asyncio.sleep(fault.delay_s)
                        elif fault.kind == "bad_line":
                            await _send_chunk(writer, b"data: {this is not json\n\n")
                        else:
                            await _send_chunk(writer, b'data: {"id":"x","object":"chat.completion.chunk"}\n\n')
                    if fault.kind == "delay":
                        await asyncio.sleep(fault.delay_s)
                    if fault.kind == "no_usage" and b'"choices":[]' in event:
                        continue
                    if fault.kind == "no_done" and event.startswith(b"data: [DONE]"):
                        continue
                    if fault.kind == "merge" and _is_content_event(event):
                        if held is None:
                            held = event
                            continue
                        event, held = _merge_events(held, event), None
                    elif held is not None:
                        await _send_chunk(writer, held)
                        held = None
                    await _send_chunk(writer, event)
                    sent += 1
                    if event.startswith(b"data: [DONE]"):
                        self.completed_ids.append(headers.get("x-request-id", ""))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            if fault.kind == "no_done":
                self.completed_ids.append(headers.get("x-request-id", ""))
        finally:
            up_writer.close()


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


def _with_model(body: bytes, model: str) -> bytes:
    obj = json.loads(body)
    obj["model"] = model
    return json.dumps(obj).encode()


def _is_content_event(event: bytes) -> bool:
    return b'"content":"' in event and b'"role"' not in event and b'"finish_reason":null' in event


def _merge_events(first: bytes, second: bytes) -> bytes:
    """One event carrying both events' text, as a server that batches tokens into one chunk would send."""
    a = json.loads(first[6:].strip())
    b = json.loads(second[6:].strip())
    b["choices"][0]["delta"]["content"] = a["choices"][0]["delta"]["content"] + b["choices"][0]["delta"]["content"]
    return b"data: " + json.dumps(b, separators=(",", ":")).encode() + b"\n\n"
