"""The streaming hot path: send one POST, then stamp every socket read and do nothing else until the stream ends.

Why not Locust's FastHttpUser or requests: their line readers buffer (geventhttpclient's `iter_lines` waits for
1 KiB, so TTFT was 62 ms when the truth was 1 ms) or cost more CPU per token (see docs/performance.md). Here the
loop is `recv` → stamp → append; de-chunking, SSE splitting and JSON decoding happen after the last byte
(`vlab.client.sse.parse_stream`, run by `vlab.locust.finisher` between other streams' reads), where they cannot
delay a stamp.

Stamps are `time.perf_counter()` seconds taken right after `recv` returns, or, with `kernel_timestamps`, the
kernel's receive time of the data (SO_TIMESTAMPNS via `recvmsg`, mapped onto perf_counter), which does not depend on
when the greenlet got to run. Works under gevent (Locust monkey-patches `socket`) and in plain threads.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from vlab.client.http import parse_base_url
from vlab.core.records import ErrorKind

_TERMINAL_CHUNK = b"\r\n0\r\n\r\n"
_RECV_SIZE = 65536
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")  # struct timespec {time_t tv_sec; long tv_nsec;} on 64-bit Linux


@dataclass(slots=True)
class RawStream:
    """Everything one request produced, unparsed. Stamps are perf_counter seconds."""

    t_send: float = 0.0
    t_send_wall: float = 0.0
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    reads: list[bytes] = field(default_factory=list)
    """Body bytes of each read, in order (the first may hold what followed the headers)."""
    stamps: list[float] = field(default_factory=list)
    """Arrival stamp of each entry of `reads`."""
    complete: bool = False
    """The body ended as HTTP framed it (terminal chunk, Content-Length reached, or clean close)."""
    error_kind: str = ""
    error: str = ""
    seen: int = 0
    """Reads already looked at by the live view (`vlab.locust.monitor`); never used for the records."""


class StreamConnection:
    """One keep-alive HTTP/1.1 connection to an OpenAI-compatible server (one per Locust user)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        kernel_timestamps: bool = True,
    ) -> None:
        url = parse_base_url(base_url)
        self.host, self.port, self.tls, self.prefix = url.host, url.port, url.tls, url.prefix
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._head = (
            f"Host: {url.host_header}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n{auth}{extra}"
        ).encode()
        self.kernel_timestamps = kernel_timestamps and not self.tls
        self._sock: socket.socket | None = None
        self._raw: RawStream | None = None
        """The stream being read, for the watchdog: its last stamp is the last sign of life."""
        self._stalled = False

    # ------------------------------------------------------------------------------------------------ connection
    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        elif self.kernel_timestamps:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                self.kernel_timestamps = False
        if _gevent_sockets():
            # A timeout on the socket arms and cancels a hub timer on every read that waits (+23% CPU per token,
            # docs/performance.md); one watchdog per process enforces read_timeout_s for all connections instead.
            sock.settimeout(None)
            _Watchdog.get().watch(self)
        else:
            sock.settimeout(self.read_timeout_s)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    # ------------------------------------------------------------------------------------------------- request
    def post(self, path: str, body: bytes, raw: RawStream | None = None, *, request_id: str = "") -> RawStream:
        """POST `body` to `path` and read the whole response into `raw` (a new one by default). A `request_id` goes
        out as `X-Request-Id`, which vLLM takes as its own request id (its logs then name the suite's record).

        Never raises for network or HTTP failures: they are returned in `error_kind`/`error` with whatever arrived
        before them. If the calling greenlet is killed mid-stream (the run stopped), `raw` keeps what had arrived.
        """
        request = b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            (self.prefix + path).encode(),
            self._head,
            b"X-Request-Id: %s\r\n" % request_id.encode() if request_id else b"",
            len(body),
            body,
        )
        raw = RawStream() if raw is None else raw
        if self._sock is not None and _peer_closed(self._sock):
            self.close()  # the server closed this idle keep-alive connection: open a fresh one, before sending
        try:
            if self._sock is None:
                self._sock = self._connect()
        except (TimeoutError, OSError) as exc:
            raw.error_kind, raw.error = ErrorKind.CONNECT, _describe(exc, f"{self.host}:{self.port}")
            return raw
        self._raw, self._stalled = raw, False
        try:
            self._exchange(request, raw)
        except (TimeoutError, OSError) as exc:
            self.close()
            failure: BaseException = TimeoutError(f"no data for {self.read_timeout_s:g} s") if self._stalled else exc
            raw.error_kind = ErrorKind.READ_TIMEOUT if isinstance(failure, TimeoutError) else ErrorKind.STREAM_CUT
            raw.error = _describe(failure, f"{self.host}:{self.port}")
        except BaseException:
            self.close()  # e.g. GreenletExit when the run stops mid-stream: the socket is in an unknown state
            raise
        finally:
            self._raw = None
        if not raw.complete or raw.headers.get("connection", "").lower() == "close":
            self.close()
        return raw

    def _exchange(self, request: bytes, raw: RawStream) -> None:
        sock = self._sock
        assert sock is not None
        read = self._read_kernel_stamped if self.kernel_timestamps else self._read_stamped
        raw.t_send_wall = time.time()
        raw.t_send = time.perf_counter()
        sock.sendall(request)

        # Status line and headers.
        buf = b""
        while b"\r\n\r\n" not in buf:
            data, stamp = read(sock)
            if not data:
                raise ConnectionResetError("connection closed before the response headers")
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        raw.status = int(lines[0].split(" ", 2)[1])
        raw.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        raw.chunked = "chunked" in raw.headers.get("transfer-encoding", "").lower()
        length = raw.headers.get("content-length")
        reads, stamps = raw.reads, raw.stamps
        if rest:
            reads.append(rest)
            stamps.append(stamp)

        # Body: the hot loop. Only the end-of-body test happens here.
        if raw.chunked:
            tail = rest[-16:]
            while not tail.endswith(_TERMINAL_CHUNK) and tail != b"0\r\n\r\n":
                data, stamp = read(sock)
                if not data:
                    raise ConnectionResetError("connection closed mid-stream")
                reads.append(data)
                stamps.append(stamp)
                tail = (tail + data)[-16:]
        elif length is not None:
            remaining = int(length) - len(rest)
            while remaining > 0:
                data, stamp = read(sock)
                if not data:
                    raise ConnectionResetError("connection closed mid-body")
                reads.append(data)
                stamps.append(stamp)
                remaining -= len(data)
        else:  # delimited by close
            while True:
                data, stamp = read(sock)
                if not data:
                    break
                reads.append(data)
                stamps.append(stamp)
        raw.complete = True

    @staticmethod
    def _read_stamped(sock: socket.socket) -> tuple[bytes, float]:
        data = sock.recv(_RECV_SIZE)
        return data, time.perf_counter()

    @staticmethod
    def _read_kernel_stamped(sock: socket.socket) -> tuple[bytes, float]:
        data, ancdata, _flags, _addr = sock.recvmsg(_RECV_SIZE, 64)
        now = time.perf_counter()
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                # Map the kernel's CLOCK_REALTIME stamp onto perf_counter through the current offset of the clocks.
                stamp = now - (time.time() - (sec + nsec * 1e-9))
                return data, min(stamp, now)
        return data, now


def _peer_closed(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or holds stray bytes): either
    way it must not carry the next request. A POST is never re-sent once written."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _gevent_sockets() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class _Watchdog:
    """Under gevent: one greenlet per process that ends any stream silent for longer than its `read_timeout_s`
    (checked every 0.25 s), by shutting its socket down; the reader then reports a read timeout."""

    _instance: _Watchdog | None = None
    PERIOD_S = 0.25

    def __init__(self) -> None:
        import weakref

        import gevent

        self.connections: weakref.WeakSet[StreamConnection] = weakref.WeakSet()
        self._greenlet = gevent.spawn(self._run)

    @classmethod
    def get(cls) -> _Watchdog:
        if cls._instance is None or cls._instance._greenlet.dead:
            cls._instance = cls()
        return cls._instance

    def watch(self, conn: StreamConnection) -> None:
        self.connections.add(conn)

    def _run(self) -> None:
        import gevent

        while True:
            gevent.sleep(self.PERIOD_S)
            now = time.perf_counter()
            for conn in list(self.connections):
                raw, sock = conn._raw, conn._sock
                if raw is None or sock is None or not raw.t_send:
                    continue
                last = raw.stamps[-1] if raw.stamps else raw.t_send
                if now - last > conn.read_timeout_s:
                    conn._stalled = True
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out ({where})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{text} ({where})"
