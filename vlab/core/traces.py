"""Request traces, replayed at their recorded arrival times: Mooncake JSONL and BurstGPT CSV, read into one model.

A trace is a list of requests in time order, each with its arrival time, its input and output lengths in tokens and,
where the format has them, its prefix blocks. Both formats are read into `TraceRow`s:

- **Mooncake** (JSONL, one object per line; `kvcache-ai/Mooncake`'s `mooncake_trace.jsonl`): `timestamp` (ms since
  the trace began), `input_length`, `output_length` (tokens) and `hash_ids`: the ids of the prompt's blocks of
  `block_tokens` tokens each (512 in Mooncake's traces), a block id standing for its whole prefix chain, so two
  requests whose `hash_ids` start alike share that prompt prefix. A row's `hash_ids` must hold exactly
  ⌈input_length / block_tokens⌉ ids (the last block may be partial); without `hash_ids` the prompt shares nothing.
  Other keys are ignored.
- **BurstGPT** (CSV with a header row; `HPMLL/BurstGPT`): `Timestamp` (seconds), `Request tokens`, `Response
  tokens`; other columns (`Model`, `Total tokens`, `Log Type`) are ignored. BurstGPT has no prefix information.

Rules: arrival times must not decrease from one row to the next (a trace is in time order); numbers must be whole
numbers of tokens ≥ 0 (an integral float such as `12.0` is accepted) and finite times ≥ 0. A row that breaks one is
one `ConfigError` line naming the file, the line and what was wrong. Rows with a zero input or output length cannot
be sent (BurstGPT logs failed requests with 0 response tokens) and are skipped and counted. Blank lines are ignored
but counted, so line numbers are the ones an editor shows. A usable trace needs two rows at different times.

`Trace.offsets(speed, n)` gives the replay times: offset_i = (t_i − t_0) / speed, seconds after the level starts,
for the first `n` rows. Its mean rate is `n / span` with span = (t_(n−1) − t_0) / speed: the arrivals of the level
divided by the time they take, so a level of that rate and `n` arrivals lasts exactly as long as the replay.

`TraceSummary.reusable_fraction` is the share of prompt tokens that an unbounded prefix cache could serve from
earlier rows of the same replay: a row's prompt is reusable up to where its block chain leaves every earlier row's
(and within a shared last block up to the longest fill seen before). It is an upper bound of the server's prefix
hit rate: a real cache evicts, and hits whole blocks of its own size only.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlab.core.errors import ConfigError
from vlab.core.filecache import cached_by_file

TraceFormat = Literal["mooncake", "burstgpt"]
MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per `hash_ids` block in Mooncake's published traces."""
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
"""The BurstGPT columns the replay reads (its header: Timestamp, Model, Request tokens, Response tokens, Total tokens,
Log Type)."""
MAX_KEPT_LINES = 100
"""Line numbers kept per skip reason in a summary (the count is exact)."""
ZERO_LENGTH = "zero input or output length"


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of a trace."""

    line: int
    """1-based line of the file the row is on (a CSV row: the line where it ends)."""
    t_s: float
    """Arrival time, seconds since the trace's first usable row."""
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()
    """Mooncake: the prompt's prefix blocks, in order; empty when the row has none."""


class TraceSummary(BaseModel):
    """What loading a trace found: for the terminal (`line()`), run.json and the report."""

    model_config = ConfigDict(frozen=True)

    path: str
    format: TraceFormat
    kind: Literal["trace"] = Field(default="trace", description="Tells a trace's summary from a dataset's in run.json.")
    rows: int = Field(description="Rows in the file (blank lines and a CSV header not counted).")
    loaded: int
    skipped: dict[str, list[int]] = Field(
        default_factory=dict, description="Rows not loaded, by reason: their line numbers (the first 100)."
    )
    skipped_counts: dict[str, int] = Field(default_factory=dict)
    span_s: float = Field(description="Last loaded row's arrival − first's, seconds (at speed 1).")
    mean_rate_per_s: float = Field(description="loaded / span_s: the trace's mean arrival rate at speed 1.")
    input_tokens_mean: float
    input_tokens_max: int
    output_tokens_mean: float
    output_tokens_max: int
    block_tokens: int | None = Field(default=None, description="Mooncake: tokens per hash_ids block.")
    distinct_blocks: int = 0
    reusable_fraction: float = Field(
        default=0.0, description="Share of prompt tokens an unbounded prefix cache could serve (module docstring)."
    )

    def line(self) -> str:
        """One line: rows, time span and rate, lengths, prefix sharing, what was skipped."""
        parts = [
            f"{self.path}: loaded {self.loaded} of {self.rows} trace rows ({self.format}) over {self.span_s:.1f} s "
            f"({self.mean_rate_per_s:.3g} req/s at speed 1)",
            f"input mean {self.input_tokens_mean:.0f} (max {self.input_tokens_max}) tokens, output mean "
            f"{self.output_tokens_mean:.0f} (max {self.output_tokens_max})",
        ]
        if self.block_tokens is not None and self.distinct_blocks:
            parts.append(
                f"{self.distinct_blocks} distinct {self.block_tokens}-token prefix blocks, "
                f"{self.reusable_fraction:.0%} of prompt tokens reusable from earlier rows"
            )
        for reason, count in self.skipped_counts.items():
            lines = ", ".join(map(str, self.skipped.get(reason, [])[:3]))
            more = ", ..." if count > 3 else ""
            parts.append(f"skipped {count} with {reason} (line{'s' if count > 1 else ''} {lines}{more})")
        return "; ".join(parts)


@dataclass(frozen=True)
class Trace:
    """A loaded trace: its usable rows in time order and the summary of the load."""

    rows: tuple[TraceRow, ...]
    summary: TraceSummary

    def count(self, requests: int | None) -> int:
        """Rows a level replays: the first `requests`, or all."""
        return len(self.rows) if requests is None else min(requests, len(self.rows))

    def span_s(self, n: int, speed: float = 1.0) -> float:
        """Replay time of the first `n` rows at `speed`: (t_(n−1) − t_0) / speed, seconds."""
        return (self.rows[n - 1].t_s - self.rows[0].t_s) / speed

    def offsets(self, speed: float, n: int) -> list[float]:
        """When each of the first `n` rows is due, seconds after the level starts: (t_i − t_0) / speed."""
        t0 = self.rows[0].t_s
        return [(row.t_s - t0) / speed for row in self.rows[:n]]

    def mean_rate(self, n: int, speed: float) -> float:
        """Arrivals per second of the first `n` rows at `speed`: n / span (module docstring)."""
        return n / self.span_s(n, speed)


# ---------------------------------------------------------------------------------------------------------- loading
def load_trace(path: str | Path, fmt: TraceFormat, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> Trace:
    """Read a trace file (module docstring); cached per file version. Raises `ConfigError` (one line: the file, the
    line, what was wrong) for an unreadable file, a bad row, or a trace with fewer than two usable rows."""
    if fmt not in ("mooncake", "burstgpt"):
        raise ConfigError(f"{path}: unknown trace format {fmt!r} (expected mooncake or burstgpt)")
    trace: Trace = cached_by_file(_load, Path(path), (fmt, block_tokens))
    return trace


def _load(path: Path, option: tuple[TraceFormat, int]) -> Trace:
    fmt, block_tokens = option
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            raw = list(_mooncake_rows(path, fh, block_tokens) if fmt == "mooncake" else _burstgpt_rows(path, fh))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the trace ({exc.strerror or exc})") from None
    return _assemble(path, fmt, block_tokens if fmt == "mooncake" else None, raw)


_Raw = tuple[int, float, int, int, tuple[int, ...]]
"""(line, time in seconds as recorded, input tokens, output tokens, hash_ids)."""


def _mooncake_rows(path: Path, lines: Any, block_tokens: int) -> Any:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path}: line {number}"
        try:
            obj = json.loads(text)
        except ValueError:
            raise ConfigError(f"{where}: not valid JSON") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected a JSON object with timestamp, input_length, output_length")
        for key in ("timestamp", "input_length", "output_length"):
            if key not in obj:
                raise ConfigError(f"{where}: missing {key!r}")
        t_ms = _time(obj["timestamp"], where, "timestamp")
        n_in = _tokens(obj["input_length"], where, "input_length")
        n_out = _tokens(obj["output_length"], where, "output_length")
        hash_ids = _hash_ids(obj.get("hash_ids"), where)
        needed = math.ceil(n_in / block_tokens)
        if hash_ids and len(hash_ids) != needed:
            raise ConfigError(
                f"{where}: {len(hash_ids)} hash_ids for input_length {n_in}, but {block_tokens}-token blocks need "
                f"{needed} (is trace.block_tokens right?)"
            )
        yield number, t_ms / 1000.0, n_in, n_out, hash_ids


def _burstgpt_rows(path: Path, fh: Any) -> Any:
    reader = csv.reader(fh)
    header = _next_csv_row(reader, path, "header")
    if header is None:
        return
    names = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in BURSTGPT_COLUMNS if c not in names]
    if missing:
        raise ConfigError(
            f"{path}: line 1: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(a BurstGPT header has {', '.join(BURSTGPT_COLUMNS)}, ...; found {', '.join(map(repr, names[:8]))})"
        )
    at = [names.index(c) for c in BURSTGPT_COLUMNS]
    while (row := _next_csv_row(reader, path, "row")) is not None:
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{path}: line {reader.line_num}"
        if len(row) <= max(at):
            raise ConfigError(f"{where}: {len(row)} fields, but the header has {len(names)}")
        t_s = _time(_number(row[at[0]], where, "Timestamp"), where, "Timestamp")
        n_in = _tokens(_number(row[at[1]], where, "Request tokens"), where, "Request tokens")
        n_out = _tokens(_number(row[at[2]], where, "Response tokens"), where, "Response tokens")
        yield reader.line_num, t_s, n_in, n_out, ()


def _next_csv_row(reader: Any, path: Path, what: str) -> list[str] | None:
    """The next CSV row, None at the end; an unreadable one is a `ConfigError` naming its line."""
    try:
        row: list[str] = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise ConfigError(f"{path}: line {reader.line_num or 1}: unreadable CSV {what} ({exc})") from None
    return row


def _number(cell: str, where: str, name: str) -> float:
    try:
        return float(cell.strip())
    except ValueError:
        raise ConfigError(f"{where}: {name!r} is not a number: {cell.strip()[:40]!r}") from None


def _time(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: {name!r} must be a finite time ≥ 0, got {value!r}")
    return float(value)


def _tokens(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer() or value < 0:
        raise ConfigError(f"{where}: {name!r} must be a whole number of tokens ≥ 0, got {value!r}")
    return int(value)


def _hash_ids(value: Any, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: 'hash_ids' must be a list of whole numbers, got {str(value)[:60]}")
    return tuple(value)


def _assemble(path: Path, fmt: TraceFormat, block_tokens: int | None, raw: list[_Raw]) -> Trace:
    """Time order, zero-length rows skipped, times made relative to the first usable row, the summary."""
    previous = -math.inf
    kept: list[_Raw] = []
    skipped: list[int] = []
    for item in raw:
        line, t_s = item[0], item[1]
        if t_s < previous:
            raise ConfigError(
                f"{path}: line {line}: arrival time {t_s:g} s is before the previous row's {previous:g} s "
                "(a trace must be in time order)"
            )
        previous = t_s
        if item[2] == 0 or item[3] == 0:
            skipped.append(line)
        else:
            kept.append(item)
    if len(kept) < 2:
        raise ConfigError(f"{path}: {len(kept)} usable trace row(s) in {len(raw)}: a replay needs at least two")
    t0 = kept[0][1]
    rows = tuple(TraceRow(line, t_s - t0, n_in, n_out, ids) for line, t_s, n_in, n_out, ids in kept)
    span = rows[-1].t_s
    if span <= 0:
        raise ConfigError(f"{path}: every usable row has the same arrival time: there is no schedule to replay")
    distinct, reusable = _prefix_reuse(rows, block_tokens) if block_tokens else (0, 0.0)
    inputs = [r.input_tokens for r in rows]
    outputs = [r.output_tokens for r in rows]
    summary = TraceSummary(
        path=str(path), format=fmt, rows=len(raw), loaded=len(rows),
        skipped={ZERO_LENGTH: skipped[:MAX_KEPT_LINES]} if skipped else {},
        skipped_counts={ZERO_LENGTH: len(skipped)} if skipped else {},
        span_s=span, mean_rate_per_s=len(rows) / span,
        input_tokens_mean=sum(inputs) / len(inputs), input_tokens_max=max(inputs),
        output_tokens_mean=sum(outputs) / len(outputs), output_tokens_max=max(outputs),
        block_tokens=block_tokens, distinct_blocks=distinct, reusable_fraction=reusable,
    )  # fmt: skip
    return Trace(rows, summary)


def _prefix_reuse(rows: tuple[TraceRow, ...], block_tokens: int) -> tuple[int, float]:
    """(distinct block ids, share of prompt tokens reusable from earlier rows: see the module docstring).

    A trie of block chains: node = (parent node, block id), holding the longest fill of that block seen so far. A
    row walks its chain; each existing node serves min(this fill, longest fill seen) tokens, and the walk stops at
    the first new node or at a block filled further than ever before."""
    nodes: dict[tuple[int, int], int] = {}
    fills: list[int] = []
    ids: set[int] = set()
    reusable = total = 0
    for row in rows:
        total += row.input_tokens
        ids.update(row.hash_ids)
        parent, matching = -1, True
        for j, block in enumerate(row.hash_ids):
            fill = min(block_tokens, row.input_tokens - j * block_tokens)
            node = nodes.get((parent, block))
            if node is None:
                node = nodes[(parent, block)] = len(fills)
                fills.append(0)
                matching = False
            elif matching:
                reusable += min(fill, fills[node])
                matching = fill <= fills[node]
            fills[node] = max(fills[node], fill)
            parent = node
    return len(ids), reusable / total if total else 0.0
