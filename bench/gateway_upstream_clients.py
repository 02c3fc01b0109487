"""CPU per streamed piece of two async HTTP clients reading the same SSE streams: what the gateway's upstream side
costs (docs/gateway.md).

Starts the fake SSE server (20 ms per token, 64 tokens per request), then for each client runs 16 concurrent
streams for 8 s on uvloop and prints the process CPU time per piece read: httpx `aiter_raw()` (the gateway's
upstream client) and aiohttp `iter_any()`. Only reading is measured, nothing is relayed.

    .venv/bin/python bench/gateway_upstream_clients.py
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

STREAMS, DURATION_S = 16, 8.0
BODY = json.dumps({"model": "fake", "prompt": "x", "max_tokens": 64, "stream": True}).encode()


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _httpx(url: str, end: float) -> int:
    import httpx

    pieces = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=100)) as client:

        async def worker() -> None:
            nonlocal pieces
            while time.time() < end:
                request = client.build_request("POST", "/v1/completions", content=BODY,
                                               headers={"content-type": "application/json"})  # fmt: skip
                response = await client.send(request, stream=True)
                async for _ in response.aiter_raw():
                    pieces += 1
                await response.aclose()

        await asyncio.gather(*(worker() for _ in range(STREAMS)))
    return pieces


async def _aiohttp(url: str, end: float) -> int:
    import aiohttp

    pieces = 0
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=100)) as session:

        async def worker() -> None:
            nonlocal pieces
            while time.time() < end:
                async with session.post("/v1/completions", data=BODY,
                                        headers={"content-type": "application/json"}) as response:  # fmt: skip
                    async for _ in response.content.iter_any():
                        pieces += 1

        await asyncio.gather(*(worker() for _ in range(STREAMS)))
    return pieces


def main() -> int:
    import uvloop

    from vlab.testing.fakeserver import fake_sse_server

    with tempfile.TemporaryDirectory() as tmp, fake_sse_server(Path(tmp), "--interval-ms", "20") as url:
        for name, reader in (("httpx aiter_raw", _httpx), ("aiohttp iter_any", _aiohttp)):
            c0 = _cpu_s()
            pieces = uvloop.run(reader(url, time.time() + DURATION_S))
            cpu = _cpu_s() - c0
            print(f"{name:>17}: {pieces} pieces, {cpu:.2f} s CPU, {cpu / max(pieces, 1) * 1e6:.0f} µs per piece")
    return 0


if __name__ == "__main__":
    sys.exit(main())
