"""The fake SSE server, run for one tool, and the truth it records: when each event really left it.

The server (`vlab/testing/fake_sse_server.py`) stamps every event with `perf_counter_ns()` right before its write
and serves the stamps at `GET /events`; each request gets an id (1, 2, ...) that it reports as
`usage.prompt_tokens` and in the response id (`cmpl-000000000042`), which is how a tool's records are matched to
the truth.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vlab.testing.fakeserver import SCRIPT as FAKE_SERVER_SCRIPT


@dataclass(frozen=True)
class TrueRequest:
    """One request as the server saw it. Times on CLOCK_MONOTONIC, seconds."""

    rid: int
    arrival_s: float
    role_s: float | None
    token_s: list[float]
    """Send time of every token event (role chunk excluded)."""
    complete: bool
    status: int
    tokens: int
    """Tokens carried by the events sent (usage.completion_tokens when complete)."""

    @property
    def ttft_ms(self) -> float | None:
        """Arrival to the first token event: the server's TTFT (first content, not the role chunk)."""
        return (self.token_s[0] - self.arrival_s) * 1000.0 if self.token_s else None

    @property
    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1000.0 for a, b in zip(self.token_s, self.token_s[1:], strict=False)]

    @property
    def tpot_ms(self) -> float | None:
        """(last token event − first token event) / (tokens − 1): time per output token after the first."""
        if len(self.token_s) < 2 or self.tokens < 2:
            return None
        return (self.token_s[-1] - self.token_s[0]) * 1000.0 / (self.tokens - 1)


def parse_events(data: dict) -> dict[int, TrueRequest]:
    """The server's `/events` JSON → TrueRequest per request id."""
    out: dict[int, TrueRequest] = {}
    for r in data["requests"]:
        out[int(r["rid"])] = TrueRequest(
            rid=int(r["rid"]),
            arrival_s=r["arrival_ns"] / 1e9,
            role_s=None if r.get("role_ns") is None else r["role_ns"] / 1e9,
            token_s=[t / 1e9 for t in r["token_ns"]],
            complete=bool(r["complete"]),
            status=int(r.get("status", 200)),
            tokens=int(r.get("tokens", len(r["token_ns"]))),
        )
    return out


class FakeServer:
    """The fake server in its own process group, pinned to `cpu`; `args` are its CLI flags (mode, edge cases)."""

    def __init__(self, args: list[str], cpu: int, workdir: Path, prefix: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ready = workdir / f"fake-port-{time.monotonic_ns()}"
        self.args = args
        self.log_path = workdir / "fake-server.log"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, str(FAKE_SERVER_SCRIPT), "--port", "0", "--ready-file", str(ready),
                 "--cpu", str(cpu), *args],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake server did not start (see {self.log_path})")
            time.sleep(0.02)
        self.port = int(ready.read_text())
        ready.unlink()
        self.url = f"http://127.0.0.1:{self.port}"

    def truth(self) -> dict[int, TrueRequest]:
        with urllib.request.urlopen(self.url + "/events", timeout=60) as resp:
            raw = json.loads(resp.read())
        return parse_events(raw)

    def raw_events(self) -> bytes:
        with urllib.request.urlopen(self.url + "/events", timeout=60) as resp:
            return resp.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
