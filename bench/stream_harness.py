"""The suite's hot path without Locust: N gevent greenlets, each with a `vlab.client.stream.StreamConnection` and
`vlab.client.sse.parse_stream`, streaming back to back (closed loop). Isolates the client path to compare variants
(kernel vs user-space stamps, ...) and to measure its CPU cost per token without Locust's overhead.

Output (`--out`, JSON lines) has the shape of `bench/ref_client.py`: `{"rid", "t_start_s", "t_ms", "ok"}`.

Variants (`--variant`):

- `kernel`: `StreamConnection(kernel_timestamps=True)` (the suite's default): SO_TIMESTAMPNS through `recvmsg`;
- `user`: `kernel_timestamps=False`: `recv` then `time.perf_counter()`;
- `kernel-mono`: kernel stamps mapped with one clock offset taken at start instead of two clock reads per
  read (see `_read_kernel_fixed_offset`: a candidate hot-path change, measured here only);
- `kernel-nomin`: like `kernel-mono` but the realtime→monotonic offset is refreshed every second;
- `kernel-notimeout`, `user-notimeout`: the socket without a timeout (`settimeout(None)`): gevent then waits for
  readability without arming a libev timer on every read (the read timeout would have to be enforced otherwise).

    python bench/stream_harness.py --url http://127.0.0.1:8901 --streams 200 --duration 15 --out /tmp/h.jsonl
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_request import request_body  # noqa: E402  (bench/ is this script's folder)

from vlab import stream as vstream  # noqa: E402
from vlab.client.sse import parse_stream  # noqa: E402
from vlab.client.stream import RawStream, StreamConnection  # noqa: E402

_OFFSET = [time.time() - time.perf_counter(), time.perf_counter()]
"""[realtime − perf_counter offset, perf_counter when it was taken], seconds."""


def _read_kernel_fixed_offset(sock: socket.socket) -> tuple[bytes, float]:
    """Candidate: one `perf_counter` read per `recv`; the kernel's realtime stamp is mapped with a cached offset."""
    data, ancdata, _flags, _addr = sock.recvmsg(vstream._RECV_SIZE, 64)
    now = time.perf_counter()
    if ancdata:
        level, kind, payload = ancdata[0]
        if kind == vstream._SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
            sec, nsec = vstream._TIMESPEC.unpack_from(payload)
            stamp = sec + nsec * 1e-9 - _OFFSET[0]
            return data, stamp if stamp < now else now
    return data, now


def _read_kernel_refreshed(sock: socket.socket) -> tuple[bytes, float]:
    data, stamp = _read_kernel_fixed_offset(sock)
    if stamp - _OFFSET[1] > 1.0:
        _OFFSET[0], _OFFSET[1] = time.time() - time.perf_counter(), time.perf_counter()
    return data, stamp


def user(
    url: str,
    path: str,
    chat: bool,
    max_tokens: int,
    variant: str,
    delay: float,
    deadline: float,
    out: list[dict],
    rng: random.Random,
) -> None:
    gevent.sleep(delay)
    conn = StreamConnection(url, kernel_timestamps=not variant.startswith("user"))
    if variant.endswith("-notimeout"):
        conn.read_timeout_s = None  # type: ignore[assignment]
    if variant == "kernel-mono":
        conn._read_kernel_stamped = _read_kernel_fixed_offset  # type: ignore[method-assign]
    elif variant == "kernel-nomin":
        conn._read_kernel_stamped = _read_kernel_refreshed  # type: ignore[method-assign]
    while time.perf_counter() < deadline:
        raw = RawStream()
        try:
            conn.post(path, request_body(rng, chat, max_tokens), raw)
        finally:
            result = parse_stream(raw)
            out.append(
                {
                    "rid": result.prompt_tokens,
                    "t_start_s": raw.t_send_wall,
                    "t_ms": [round((t - raw.t_send) * 1000.0, 4) for t in result.token_stamps],
                    "ok": result.ok and raw.status == 200 and raw.complete,
                }
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="gevent + StreamConnection harness (no Locust)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--ramp", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    parser.add_argument(
        "--variant",
        choices=("kernel", "user", "kernel-mono", "kernel-nomin", "kernel-notimeout", "user-notimeout"),
        default="kernel",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    chat = args.endpoint == "chat"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    out: list[dict] = []
    rng = random.Random(1)
    deadline = time.perf_counter() + args.duration
    greenlets = [
        gevent.spawn(
            user, args.url, path, chat, args.max_tokens, args.variant, args.ramp * i / args.streams, deadline, out, rng
        )
        for i in range(args.streams)
    ]
    gevent.sleep(max(0.0, deadline - time.perf_counter()))
    gevent.killall(greenlets, block=True, timeout=5)
    with open(args.out, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in out)


if __name__ == "__main__":
    main()
