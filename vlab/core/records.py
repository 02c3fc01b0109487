"""The token-timing records: what one request leaves on disk, and the CSV files that hold them.

A run folder holds, besides Locust's own `--csv` files and `run.json`:

- `requests.csv`: one `RequestRecord` per finished request (succeeded, failed or cut off), columns in field order;
- `tokens.csv`: one row per token event, `request_id,i,t_ms` with `t_ms` the arrival of token event `i` (0-based)
  in milliseconds since the request was sent, so TTFT, every ITL gap and E2E can be recomputed from raw data.

Rows are appended whole (one `write` of complete lines) and flushed as the run goes, so an interrupted run leaves
complete lines; readers drop a trailing partial line.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

RECORDS_FORMAT = 1
"""Bumped when a column changes meaning; `run.json` carries it so old runs are recognised."""

REQUESTS_CSV = "requests.csv"
TOKENS_CSV = "tokens.csv"
TOKENS_HEADER = "request_id,i,t_ms\n"


class ErrorKind:
    """Categories of failed requests (the `error_kind` column)."""

    CONNECT = "connect"  # connection refused / DNS / connect timeout
    HTTP = "http"  # non-2xx status; `status` has the code, `error` the server's message
    READ_TIMEOUT = "read_timeout"  # the stream stalled longer than api.read_timeout_s
    STREAM_CUT = "stream_cut"  # the connection closed before the stream's end
    NO_DONE = "no_done"  # the body ended cleanly but without `data: [DONE]`
    MALFORMED = "malformed"  # an SSE data line that is not JSON, or a chunk without `choices`
    SERVER_ERROR_EVENT = "server_error_event"  # an error object sent inside the stream
    CUT_OFF = "cut_off"  # still in flight when the run stopped
    CLIENT = "client"  # an exception in the client itself (a bug: reported, never hidden)


@dataclass(slots=True)
class RequestRecord:
    """One request, as measured by the client. Times in ms unless named `_s` (seconds)."""

    request_id: str
    """Unique within the run: `<node>-<sequence>`."""
    level: int
    """Index of the load level (stage) in force when the request was sent, 0-based."""
    level_target: float
    """That level's target: users (closed loop) or arrivals/s (open loop)."""
    user: int
    """Index of the Locust user that sent it (per process)."""
    node: str
    """The load-generator process that sent it."""
    endpoint: str
    """`chat` or `completions`."""
    t_start_s: float
    """Wall-clock send time, Unix seconds (for timelines across processes)."""
    queue_wait_ms: float
    """Open loop: time from the scheduled arrival to the send (waiting for a free slot); 0 in closed loop."""
    ttft_ms: float
    e2e_ms: float
    itl_mean_ms: float
    tpot_ms: float
    n_events: int
    """Token events received (see `vlab.core.metrics`)."""
    prompt_tokens: int
    """From the server's `usage`; −1 when the server sent none."""
    completion_tokens: int
    """From the server's `usage`; −1 when the server sent none."""
    prompt_tokens_requested: int
    """The prompt length the workload asked for; −1 for dataset prompts of unknown length."""
    max_tokens: int
    finish_reason: str
    multi_token: bool
    """Some event carried more than one token (completion_tokens > n_events)."""
    ok: bool
    status: int
    """HTTP status; 0 when no response arrived."""
    error_kind: str
    error: str
    """Short error message ("" when ok)."""
    prefix_id: int
    """Shared-prefix index used, −1 for none."""
    retrieval_ms: float
    """Time spent retrieving context before the request (RAG workloads), NaN otherwise."""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def csv_header(cls) -> str:
        return ",".join(cls.columns()) + "\n"

    def csv_line(self) -> str:
        return ",".join(_cell(v) for v in astuple(self)) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1e9 else f"{value:.6f}"
    if isinstance(value, str):
        if any(c in value for c in ',"\n\r'):
            return '"' + value.replace('"', '""').replace("\r", " ").replace("\n", " ") + '"'
        return value
    return str(value)


def token_lines(request_id: str, token_times_ms: tuple[float, ...] | list[float]) -> str:
    """The `tokens.csv` lines of one request, as one string."""
    return "".join(f"{request_id},{i},{t:.3f}\n" for i, t in enumerate(token_times_ms))
