"""Pass-through to the upstream server: httpx.AsyncClient, responses relayed as they arrive, never buffered.

`Upstream.send` opens the upstream request (`stream=True`: it returns once the status line and headers are in);
`RelayResponse` then writes each piece `aiter_raw()` yields to the client as its own ASGI body message, the moment
it arrives: uvicorn writes it to the socket as one HTTP chunk (TCP_NODELAY is on for asyncio's sockets). No
re-framing, no parsing on the way: SSE events, error bodies and status codes reach the client as vLLM sent them.
Per piece the relay only counts bytes and `\\n\\n` event ends and keeps the last few pieces, in which the `usage`
object is looked for once the response has ended (`find_usage`).

If the upstream connection breaks mid-stream the client's response is left unfinished (no terminal chunk), so the
client sees a cut stream, as it would without the gateway. If the client goes away, the upstream response is closed
at once, which makes vLLM abort the request.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Send

from gateway.config import GatewayConfig

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
REQUEST_DROP = HOP_BY_HOP | {"authorization", "x-api-key", "cookie", "accept-encoding"}
"""Never forwarded upstream: the client's key stays at the gateway (accept-encoding: SSE must not be compressed)."""
RESPONSE_DROP = HOP_BY_HOP - {"content-length"} | {"date", "server"}
"""Not copied from the upstream response (uvicorn sets its own framing, date and server headers)."""
TAIL_PIECES = 4
_USAGE_RE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def find_usage(tail: bytes) -> Usage | None:
    """The last `"usage": {...}` object in `tail` with integer prompt and completion tokens, if any."""
    for match in reversed(list(_USAGE_RE.finditer(tail))):
        try:
            obj = json.loads(match.group(1))
        except ValueError:
            continue
        prompt, completion = obj.get("prompt_tokens"), obj.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt, completion)
    return None


class Upstream:
    """The connection pool to the upstream server."""

    def __init__(self, config: GatewayConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        t = config.timeouts
        headers = {}
        if config.upstream_api_key_env:
            headers["authorization"] = f"Bearer {os.environ[config.upstream_api_key_env]}"
        self.base_url = config.upstream
        self.client = httpx.AsyncClient(
            base_url=config.upstream,
            headers=headers,
            timeout=httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.write_s, pool=t.pool_s),
            limits=httpx.Limits(
                max_connections=config.max_upstream_connections,
                max_keepalive_connections=config.max_upstream_connections,
                keepalive_expiry=30.0,
            ),
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )

    @staticmethod
    def forward_headers(incoming: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The client's request headers minus hop-by-hop ones and its credentials."""
        return [(k, v) for k, v in incoming if k.decode("latin-1").lower() not in REQUEST_DROP]

    async def send(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
        """Send the request; return once the response's headers are in (its body is read by `RelayResponse`).

        Raises httpx.TimeoutException or httpx.TransportError when the upstream cannot be reached in time."""
        request = self.client.build_request(method, path, headers=headers, content=body)
        return await self.client.send(request, stream=True)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(slots=True)
class RelayStats:
    """What one relayed response carried. Stamps are time.perf_counter() seconds."""

    t_sent: float
    t_first: float | None = None
    t_end: float | None = None
    n_bytes: int = 0
    events: int = 0
    complete: bool = False
    broken: str = ""
    """The upstream failed mid-body: the error, short."""
    client_gone: bool = False
    tail: deque[bytes] = field(default_factory=lambda: deque(maxlen=TAIL_PIECES))

    def usage(self) -> Usage | None:
        return find_usage(b"".join(self.tail))


def response_headers(upstream: httpx.Response, extra: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    out = [(k, v) for k, v in upstream.headers.raw if k.decode("latin-1").lower() not in RESPONSE_DROP]
    out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    return out


class RelayResponse(StreamingResponse):
    """Relays an upstream response body piece by piece; calls `on_end(stats)` exactly once when it is over
    (finished, broken, or the client disconnected)."""

    def __init__(
        self,
        upstream: httpx.Response,
        stats: RelayStats,
        on_end: Callable[[RelayStats], None],
        extra_headers: Mapping[str, str],
    ) -> None:
        super().__init__(content=iter(()), status_code=upstream.status_code)
        self.raw_headers = response_headers(upstream, extra_headers)
        self.upstream = upstream
        self.stats = stats
        self.on_end = on_end
        self._ended = False

    async def stream_response(self, send: Send) -> None:
        stats, upstream = self.stats, self.upstream
        tail = stats.tail
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for piece in upstream.aiter_raw():
                    if stats.t_first is None:
                        stats.t_first = time.perf_counter()
                    stats.n_bytes += len(piece)
                    stats.events += piece.count(b"\n\n")
                    tail.append(piece)
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            except httpx.HTTPError as exc:
                stats.broken = f"{type(exc).__name__}: {exc}"[:200]
            if stats.broken:
                return  # leave the response unfinished: uvicorn closes the connection and the client sees the cut
            stats.complete = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except BaseException:
            stats.client_gone = not stats.complete
            raise
        finally:
            await self.end()

    async def end(self) -> None:
        """Close the upstream response (shielded from cancellation) and report, once."""
        if self._ended:
            return
        self._ended = True
        with anyio.CancelScope(shield=True):
            await self.upstream.aclose()
        self.stats.t_end = time.perf_counter()
        self.on_end(self.stats)
