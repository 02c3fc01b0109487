"""Run the gateway app under uvicorn in a background thread, for tests (the same app and server as `python -m
gateway`, in-process so a test can drive its clock and read its state)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from gateway.app import Gateway, create_app
from gateway.config import GatewayConfig, hash_key, parse_config
from gateway.logs import JsonLog


class FakeClock:
    """A settable monotonic clock (seconds) for the token buckets."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway


def make_config(upstream: str, keys: dict[str, str], **settings: Any) -> GatewayConfig:
    """A config for `upstream` with `keys` (id → plain key, hashed here) and any other top-level settings; a
    per-key `limits` goes in `settings["key_limits"][id]`."""
    key_limits = settings.pop("key_limits", {})
    data = {
        "upstream": upstream,
        "keys": [
            {"id": kid, "hash": hash_key(key), **({"limits": key_limits[kid]} if kid in key_limits else {})}
            for kid, key in keys.items()
        ],
        **settings,
    }
    return parse_config(data, "test config")


@contextlib.contextmanager
def running_gateway(
    config: GatewayConfig, *, clock: Callable[[], float] = time.monotonic, log: JsonLog | None = None
) -> Iterator[RunningGateway]:
    """Serve `config` on a free port of 127.0.0.1 for the block; yields its URL and the Gateway state."""
    app = create_app(config, clock=clock, log=log)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app.state.gateway)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class StampedStream:
    """One streamed response read with a perf_counter_ns stamp per socket read."""

    status: int
    head: bytes
    body: bytes
    event_ns: list[int]
    """Arrival stamp of each SSE event (the read that brought its closing blank line), in order."""
    reads: int


def stream_stamped(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> StampedStream:
    """POST `body` over a fresh HTTP/1.1 connection and stamp every read (time.perf_counter_ns, CLOCK_MONOTONIC:
    comparable with the fake SSE server's send stamps). Reads until the terminal chunk or the close."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytearray()
    ends: list[tuple[int, int]] = []  # (byte offset after the read, stamp)
    try:
        sock.sendall(request)
        while True:
            chunk = sock.recv(65536)
            stamp = time.perf_counter_ns()
            if not chunk:
                break
            data += chunk
            ends.append((len(data), stamp))
            if data.endswith(b"0\r\n\r\n") or (b"content-length:" in data.lower() and _complete(data)):
                break
    finally:
        sock.close()
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    offset = len(head) + 4
    event_ns: list[int] = []
    pos = 0
    i = 0
    while True:
        pos = rest.find(b"\n\n", pos)
        if pos < 0:
            break
        end = offset + pos + 2
        while ends[i][0] < end:
            i += 1
        event_ns.append(ends[i][1])
        pos += 2
    return StampedStream(status, head, rest, event_ns, len(ends))


def _complete(data: bytearray) -> bool:
    head, sep, rest = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip())
    return False
