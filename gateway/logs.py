"""Structured logs: one JSON object per line, one line per request (plus start/stop lines).

A request line has: `ts` (Unix seconds), `event: "request"`, `request_id` (also sent to the client as
`x-request-id`), `key_id` (the configured id, `-` before authentication: never the key, never a header, never the
body), `method`, `path`, `model`, `status` (499: the client went away first), `outcome` (`ok`; `rejected`, with
`reason` — `auth`, `validation`, `rate_requests`, `rate_tokens`, `too_large`, `upstream_unreachable`,
`upstream_timeout` — and `message`; `upstream_error`: vLLM answered ≥ 400; `upstream_broken`: vLLM's connection
broke mid-body, with `error`; `client_disconnected`), and timings in ms: `admit_ms`
(received → upstream request sent, the gateway's own work), `upstream_ttft_ms` (sent → first body bytes),
`duration_ms` (received → last byte relayed); then `bytes`, `events`, `prompt_tokens_estimate`, `max_tokens`,
`tokens_reserved`, `tokens_charged`, `usage_prompt_tokens`, `usage_completion_tokens`.

Lines are written whole with one `write` and flushed, so a reader never sees half a line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class JsonLog:
    """Appends JSON lines to a file, or to standard error when `path` is None."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the process
        else:
            self._stream = sys.stderr

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        self._stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self.path is not None:
            self._stream.close()
