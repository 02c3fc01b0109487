"""Reference streaming client: asyncio + aiohttp, the approach of `vllm bench serve`.

N coroutines each stream completions back to back (closed loop) for `--duration` seconds. Each one iterates
`response.content` line by line, stamps every line with `time.perf_counter()` as it comes out of the iterator, and
decodes the JSON of every `data:` line in the loop (as `vllm bench serve` does). Token events are the choice events
that are not the chat role chunk.

Output (`--out`, JSON lines): one object per request, the same shape the benchmark reads from the suite's
tokens.csv/requests.csv: `{"rid": server request id from usage.prompt_tokens (-1 if none), "t_start_s": wall clock
send time (Unix s), "t_ms": [token event arrival, ms since send, ...], "ok": bool}`.

    python bench/ref_client.py --url http://127.0.0.1:8901 --streams 200 --duration 15 --out /tmp/ref.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import aiohttp
from bench_request import request_body


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, chat: bool, out: list[dict]) -> None:
    """Send one request and append its record to `out` (also when cancelled mid-stream)."""
    rec: dict = {"rid": -1, "t_start_s": time.time(), "t_ms": [], "ok": False}
    stamps: list[float] = []
    t_send = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            if response.status != 200:
                await response.read()
                return
            async for line in response.content:
                line = line.strip()
                if not line:
                    continue
                chunk = line.decode("utf-8").removeprefix("data: ")
                if chunk == "[DONE]":
                    rec["ok"] = True
                    continue
                timestamp = time.perf_counter()
                data = json.loads(chunk)
                choices = data.get("choices")
                if choices:
                    choice = choices[0]
                    if chat:
                        delta = choice.get("delta") or {}
                        if "role" in delta and not delta.get("content"):
                            continue  # role chunk: TTFT for vllm bench serve, not a token event
                    stamps.append(timestamp)
                elif usage := data.get("usage"):
                    rec["rid"] = int(usage.get("prompt_tokens") or -1)
    finally:
        rec["t_ms"] = [round((t - t_send) * 1000.0, 4) for t in stamps]
        out.append(rec)


async def user(
    session: aiohttp.ClientSession,
    url: str,
    chat: bool,
    max_tokens: int,
    start_delay: float,
    deadline: float,
    out: list[dict],
    rng: random.Random,
) -> None:
    await asyncio.sleep(start_delay)
    while time.perf_counter() < deadline:
        await one_stream(session, url, request_body(rng, chat, max_tokens), chat, out)


async def run(args: argparse.Namespace) -> list[dict]:
    chat = args.endpoint == "chat"
    url = args.url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
    out: list[dict] = []
    rng = random.Random(1)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    deadline = time.perf_counter() + args.duration
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.ensure_future(
                user(session, url, chat, args.max_tokens, args.ramp * i / args.streams, deadline, out, rng)
            )
            for i in range(args.streams)
        ]
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="asyncio + aiohttp reference streaming client")
    parser.add_argument("--url", required=True, help="Server root, e.g. http://127.0.0.1:8901")
    parser.add_argument("--streams", type=int, default=50, help="Concurrent streams (closed loop).")
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds of load.")
    parser.add_argument("--ramp", type=float, default=1.0, help="Streams start evenly over this many seconds.")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    parser.add_argument("--out", required=True, help="JSON lines output, one request per line.")
    parser.add_argument("--cpu", type=int, default=None, help="Pin the process to this core.")
    parser.add_argument("--uvloop", action="store_true", help="Use uvloop (vllm bench serve does not by default).")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    records = asyncio.run(run(args))
    with open(args.out, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
