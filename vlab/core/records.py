"""The token-timing records: what one request leaves on disk, declared once.

`RequestRecord` is the registry of per-request metrics: each field carries a `Column` (dtype, unit, label, how the
report uses it), and everything else is derived from it — the `requests.csv` header and cells, the dtypes
`analysis.load` reads with, the per-level distributions of the summary and the live console, and the labels of the
report's tables. Adding a per-request metric is: declare a field here, compute it where the record is built
(`vlab.locust.user.to_record`), and, if it comes from the stream, parse it in `vlab.client.sse`.

A run folder holds (names in `vlab.core.runfolder`):

- `requests.csv`: one `RequestRecord` per finished request (succeeded, failed or cut off), columns in field order;
- `tokens.csv`: one row per token event, `request_id,i,t_ms` with `t_ms` the arrival of token event `i` (0-based)
  in milliseconds since the request was sent, so TTFT, every ITL gap and E2E can be recomputed from raw data.

Rows are appended whole (one `write` of complete lines) and flushed as the run goes, so an interrupted run leaves
complete lines; readers drop a trailing partial line.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field, fields
from typing import Any, Literal

RECORDS_FORMAT = 2
"""Bumped when a column changes meaning; `run.json` carries it so old runs are recognised.

Format 2: `ttft_ms` ends at the first event carrying generated output (content, reasoning or a tool call), and
`first_chunk_ms` (new) keeps the first choice event, role-only chunks included (what format 1 called TTFT)."""
READABLE_FORMATS = frozenset({1, 2})

TOKENS_HEADER = "request_id,i,t_ms\n"

Dtype = Literal["str", "category", "float64", "int32", "int16", "int8", "bool"]


class ErrorKind:
    """Categories of failed requests (the `error_kind` column)."""

    CONNECT = "connect"  # connection refused / DNS / connect timeout
    HTTP = "http"  # non-2xx status; `status` has the code, `error` the server's message
    RATE_LIMITED = "rate_limited"  # HTTP 429: the server (or a gateway) refused for load, not for a fault
    READ_TIMEOUT = "read_timeout"  # the stream stalled longer than api.read_timeout_s
    STREAM_CUT = "stream_cut"  # the connection closed before the stream's end
    NO_DONE = "no_done"  # the body ended cleanly but without `data: [DONE]`
    MALFORMED = "malformed"  # an SSE data line that is not JSON, or a chunk without `choices`
    SERVER_ERROR_EVENT = "server_error_event"  # an error object sent inside the stream
    CUT_OFF = "cut_off"  # still in flight when the run stopped: not a failure
    CLIENT = "client"  # an exception in the client itself (a bug: reported, never hidden)


@dataclass(frozen=True, slots=True)
class Column:
    """How one record field is stored and shown."""

    dtype: Dtype
    unit: str = ""
    """"ms", "s", "tokens" or "" (counts, labels)."""
    label: str = ""
    """Short name for tables; empty for columns that are not shown as a distribution."""
    summarize: bool = False
    """Summarized per level (n, mean, std, percentiles, with confidence intervals) over the measured requests."""
    missing: Any = None
    """Value for runs recorded before the column existed (None: the column is required)."""


def _col(dtype: Dtype, unit: str = "", label: str = "", *, summarize: bool = False, missing: Any = None) -> Any:
    """A record field with its `Column`; a column older runs lack (`missing` set) also defaults to that value."""
    meta = {"column": Column(dtype, unit, label, summarize, missing)}
    return field(metadata=meta) if missing is None else field(default=missing, metadata=meta)


@dataclass(slots=True, kw_only=True)
class RequestRecord:
    """One request, as measured by the client. Times in ms unless named `_s` (seconds)."""

    request_id: str = _col("str")
    """Unique within the run: `<node>-<sequence>`."""
    level: int = _col("int32")
    """Index of the load level (stage) in force when the request was sent, 0-based; −1 outside any level."""
    level_target: float = _col("float64")
    """That level's target: users (closed loop) or arrivals/s (open loop)."""
    user: int = _col("int32")
    """Index of the Locust user that sent it (per process)."""
    node: str = _col("category")
    """The load-generator process that sent it."""
    endpoint: str = _col("category")
    """`chat`, `completions`, `responses` or `embeddings` (`vlab.core.scenario.ApiConfig.endpoint`)."""
    t_start_s: float = _col("float64", "s")
    """Wall-clock send time, Unix seconds (for timelines across processes)."""
    queue_wait_ms: float = _col("float64", "ms", "Queue wait", summarize=True)
    """Open loop: send − scheduled arrival (waiting for a free slot, plus the generator's dispatch lateness)."""
    waited_for_slot: bool = _col("bool", missing=False)
    """Open loop: every slot was busy at the scheduled arrival, so the request waited for one."""
    schedule_lag_ms: float = _col("float64", "ms", "Schedule lag (send − scheduled arrival)", summarize=True,
                                  missing=math.nan)  # fmt: skip
    """Open loop: the instant the request's bytes were sent − its scheduled arrival (a trace row's recorded time ÷
    speed after the level's start); queue_wait_ms plus building the body and connecting. NaN in closed loop."""
    trace_line: int = _col("int32", missing=-1)
    """Trace replay: the line of the trace file this request replayed (`vlab.core.traces.TraceRow.line`); −1 else."""
    first_chunk_ms: float = _col("float64", "ms", missing=math.nan)
    """First choice event − send, role-only chunks included (`vllm bench serve`'s TTFT)."""
    ttft_ms: float = _col("float64", "ms", "TTFT", summarize=True)
    """Time to first token: first event carrying generated output (content, reasoning, tool call) − send."""
    e2e_ms: float = _col("float64", "ms", "E2E", summarize=True)
    """End-to-end latency: last token event − send."""
    itl_mean_ms: float = _col("float64", "ms", "ITL (per-request mean)", summarize=True)
    """(last − first token event) / (token events − 1)."""
    tpot_ms: float = _col("float64", "ms", "TPOT", summarize=True)
    """(E2E − TTFT) / (output tokens − 1)."""
    ttfr_ms: float = _col("float64", "ms", "Time to first reasoning token", summarize=True, missing=math.nan)
    """Reasoning streams (`vlab.core.metrics.PhaseTiming`): first event carrying reasoning text − send; NaN when the
    stream carried no reasoning."""
    ttfa_ms: float = _col("float64", "ms", "Time to first answer token", summarize=True, missing=math.nan)
    """Reasoning streams: first event carrying answer text (content or a tool call) − send; NaN without reasoning."""
    reasoning_tokens: float = _col("float64", "tokens", "Reasoning tokens", summarize=True, missing=math.nan)
    """Reasoning streams: token events of the reasoning phase (one token each unless multi_token); NaN without."""
    answer_tokens: float = _col("float64", "tokens", "Answer tokens", summarize=True, missing=math.nan)
    """Reasoning streams: token events of the answer phase; NaN without reasoning."""
    itl_reasoning_ms: float = _col("float64", "ms", "ITL in the reasoning phase (per-request mean)", summarize=True,
                                   missing=math.nan)  # fmt: skip
    """Reasoning streams: mean gap between consecutive reasoning-phase events; NaN below two of them."""
    itl_answer_ms: float = _col("float64", "ms", "ITL in the answer phase (per-request mean)", summarize=True,
                                missing=math.nan)  # fmt: skip
    """Reasoning streams: mean gap between consecutive answer-phase events; NaN below two of them."""
    n_events: int = _col("int32")
    """Token events received (see `vlab.core.metrics`)."""
    prompt_tokens: int = _col("int32", "tokens", "Prompt tokens (server usage)", summarize=True)
    """From the server's `usage`; −1 when the server sent none."""
    completion_tokens: int = _col("int32", "tokens")
    """From the server's `usage`; −1 when the server sent none."""
    prompt_tokens_requested: int = _col("int32", "tokens")
    """The prompt length the workload asked for; −1 for dataset prompts of unknown length."""
    max_tokens: int = _col("int32", "tokens")
    finish_reason: str = _col("category")
    multi_token: bool = _col("bool")
    """Some event carried more than one token (completion_tokens > n_events)."""
    ok: bool = _col("bool")
    status: int = _col("int16")
    """HTTP status; 0 when no response arrived."""
    error_kind: str = _col("category")
    error: str = _col("category")
    """Short error message ("" when ok)."""
    prefix_id: int = _col("int32")
    """Shared-prefix index used, −1 for none."""
    retrieval_ms: float = _col("float64", "ms", "Retrieval (RAG, before the request)", summarize=True)
    """Time spent retrieving context before the request (RAG workloads), NaN otherwise."""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def csv_header(cls) -> str:
        return ",".join(cls.columns()) + "\n"

    def csv_line(self) -> str:
        return ",".join(_cell(v) for v in astuple(self)) + "\n"


COLUMNS: dict[str, Column] = {f.name: f.metadata["column"] for f in fields(RequestRecord)}
"""Every `requests.csv` column, in file order, with how it is stored and shown."""
SUMMARIZED: dict[str, Column] = {name: col for name, col in COLUMNS.items() if col.summarize}
"""The per-request distributions summarized per level (key = column name)."""


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
