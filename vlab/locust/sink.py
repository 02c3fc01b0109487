"""Where finished requests go: batched, whole-line appends to the run's CSV files.

Users hand over a record and its token times (`add`, no I/O); a background greenlet writes what has accumulated
every `interval_s` seconds with one `write` per file, and `close` writes the rest. Lines are always whole, so a
run interrupted at any moment leaves readable CSVs.

Distributed runs (`--processes N`, `--master`/`--worker`): workers hold a `MessageSink` that sends batches over
Locust's own messaging; the master validates them (`RecordBatch`), drops repeats, and writes the one set of CSVs
through its `CsvSink` — so the run folder is complete on the master's machine, whatever the number of workers.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from pathlib import Path
from typing import TextIO

import gevent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlab.core.client_health import MONITOR_HEADER
from vlab.core.records import TOKENS_HEADER, RequestRecord, token_lines
from vlab.core.runfolder import MONITOR_CSV, REQUESTS_CSV, TOKENS_CSV

_COLUMNS = RequestRecord.columns()
_OK, _KIND = _COLUMNS.index("ok"), _COLUMNS.index("error_kind")


class RunCounts:
    """How the requests written so far ended: ok, and failed by error kind (cut-off and rate-limited requests are
    kept apart: they are not failures, `vlab.core.metrics.outcomes`)."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed_by_kind: dict[str, int] = {}
        self.other: dict[str, int] = {}

    def count(self, ok: bool, kind: str) -> None:
        if ok:
            self.ok += 1
        elif kind in ("cut_off", "rate_limited"):
            self.other[kind] = self.other.get(kind, 0) + 1
        else:
            self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1

    def count_line(self, line: str) -> None:
        """A `requests.csv` line from a worker (its error message, the only quoted cell, comes after these)."""
        cells = line.split(",", _KIND + 1)
        self.count(cells[_OK] == "1", cells[_KIND])


class _Pending:
    """What users hand over, queued as formatted lines until the next flush (no I/O on the users' path)."""

    def __init__(self) -> None:
        self._requests_q: list[str] = []
        self._tokens_q: list[str] = []
        self._monitor_q: list[str] = []
        self.counts = RunCounts()

    def add(self, record: RequestRecord, token_times_ms: tuple[float, ...] | list[float]) -> None:
        """Queue one finished request (string formatting only)."""
        self.counts.count(record.ok, record.error_kind)
        self._requests_q.append(record.csv_line())
        if token_times_ms:
            self._tokens_q.append(token_lines(record.request_id, token_times_ms))

    def add_monitor(self, line: str) -> None:
        """Queue one self-monitoring sample (`vlab.locust.monitor`)."""
        self._monitor_q.append(line)

    interval_s: float

    def flush(self) -> None:
        raise NotImplementedError

    def _flush_loop(self) -> None:
        """Runs in the sink's flusher greenlet: hand over what accumulated every `interval_s` seconds."""
        while True:
            gevent.sleep(self.interval_s)
            self.flush()

    def _take(self) -> tuple[list[str], list[str], list[str]]:
        taken = self._requests_q, self._tokens_q, self._monitor_q
        self._requests_q, self._tokens_q, self._monitor_q = [], [], []
        return taken


class CsvSink(_Pending):
    """Appends records to `requests.csv` and token times to `tokens.csv` in `run_dir`."""

    def __init__(self, run_dir: Path, interval_s: float = 0.5) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self._requests = self._open(run_dir / REQUESTS_CSV, RequestRecord.csv_header())
        self._tokens = self._open(run_dir / TOKENS_CSV, TOKENS_HEADER)
        _Pending.__init__(self)
        self._monitor: TextIO | None = None  # client_monitor.csv, opened with the first sample
        self._lock = threading.Lock()  # gevent-patched under Locust; a real lock in plain-thread use
        self.written = 0
        self.interval_s = interval_s
        self._flusher = gevent.spawn(self._flush_loop)

    @staticmethod
    def _open(path: Path, header: str):
        fresh = not path.exists() or path.stat().st_size == 0
        handle = path.open("a", encoding="utf-8", newline="")
        if fresh:
            handle.write(header)
            handle.flush()
        return handle

    def add_lines(
        self, request_lines: list[str], token_chunks: list[str], monitor_lines: list[str] | None = None
    ) -> None:
        """Queue already formatted lines (records that arrived from a worker process)."""
        for line in request_lines:
            self.counts.count_line(line)
        self._requests_q.extend(request_lines)
        self._tokens_q.extend(token_chunks)
        self._monitor_q.extend(monitor_lines or [])

    def flush(self) -> None:
        with self._lock:
            requests, tokens, monitor = self._take()
            if tokens:  # tokens first: a request row never points at token rows that are not on disk
                self._tokens.write("".join(tokens))
                self._tokens.flush()
            if requests:
                self._requests.write("".join(requests))
                self._requests.flush()
                self.written += len(requests)
            if monitor:
                if self._monitor is None:
                    self._monitor = self._open(self.run_dir / MONITOR_CSV, MONITOR_HEADER)
                handle = self._monitor
                handle.write("".join(monitor))
                handle.flush()

    def close(self) -> None:
        self._flusher.kill(block=False)
        self.flush()
        self._requests.close()
        self._tokens.close()
        if self._monitor is not None:
            self._monitor.close()


class RecordBatch(BaseModel):
    """One batch of records sent by a worker to the master (`vlab_records` message), validated on arrival."""

    model_config = ConfigDict(extra="forbid")

    node: str = Field(min_length=1)
    seq: int = Field(ge=0, description="Per-worker batch number, from 0: the master drops repeats.")
    requests: list[str]
    """Complete `requests.csv` lines, each ending in a newline."""
    tokens: list[str]
    """Complete `tokens.csv` line groups (one per request)."""
    monitor: list[str] = []
    """Self-monitoring samples (`vlab.locust.monitor`), `client_monitor.csv` lines."""
    final: bool = False
    """Sent from the worker's test_stop: nothing more will come from this worker for this test."""

    @field_validator("requests")
    @classmethod
    def _whole_rows(cls, lines: list[str]) -> list[str]:
        for line in lines:
            fields = next(csv.reader([line]))
            if not line.endswith("\n") or len(fields) != _N_COLUMNS:
                raise ValueError(f"not a whole requests.csv row: {line[:80]!r}")
        return lines


_N_COLUMNS = len(RequestRecord.columns())
MESSAGE_TYPE = "vlab_records"
BATCH_INTERVAL_S = 0.5
"""How often a worker sends its records to the master: what a worker that dies can take with it."""


class MessageSink(_Pending):
    """On a Locust worker: batches records and sends them to the master, which writes the run's CSVs.

    Batches go every `interval_s` seconds and once more from the worker's `test_stop` (`flush`), before the worker
    reports that it stopped, so the master has every record by its own `test_stop`.
    """

    def __init__(self, runner, node: str, interval_s: float = BATCH_INTERVAL_S) -> None:
        _Pending.__init__(self)
        self.runner = runner
        self.node = node
        self._seq = 0
        self.written = 0
        self.interval_s = interval_s
        self._flusher = gevent.spawn(self._flush_loop)

    def flush(self, final: bool = False) -> None:
        """Send what has accumulated; `final` (from test_stop) sends even an empty batch, as the end marker."""
        requests, tokens, monitor = self._take()
        if not requests and not tokens and not monitor and not final:
            return
        batch = {"node": self.node, "seq": self._seq, "requests": requests, "tokens": tokens, "monitor": monitor,
                 "final": final}  # fmt: skip
        self._seq += 1
        self.runner.send_message(MESSAGE_TYPE, batch)
        self.written += len(requests)

    def close(self) -> None:
        self._flusher.kill(block=False)
        self.flush()


class BatchReceiver:
    """On the master: validates worker batches, drops repeats, and appends them to the run's `CsvSink`."""

    def __init__(self, sink: CsvSink) -> None:
        self.sink = sink
        self.last_seq: dict[str, int] = {}
        self.finished: set[str] = set()
        """Workers whose final batch has arrived."""
        self.rejected = 0
        self.nodes: dict[str, str] = {}
        """Locust's worker id → the worker's `node`, from the batches' senders."""
        self.received: dict[str, int] = {}
        """requests.csv rows received, per node."""

    def __call__(self, environment, msg, **_kw) -> None:
        try:
            batch = RecordBatch.model_validate(msg.data)
        except ValidationError as exc:
            self.rejected += 1
            logging.getLogger("vlab").error("vlab: rejected a record batch from a worker: %s", exc.errors()[0]["msg"])
            return
        if batch.seq <= self.last_seq.get(batch.node, -1):
            return
        self.last_seq[batch.node] = batch.seq
        if getattr(msg, "node_id", None):
            self.nodes[msg.node_id] = batch.node
        self.received[batch.node] = self.received.get(batch.node, 0) + len(batch.requests)
        self.sink.add_lines(batch.requests, batch.tokens, batch.monitor)
        if batch.final:
            self.finished.add(batch.node)

    def wait_for_finals(self, expected: int, timeout_s: float = 15.0) -> bool:
        """Block (cooperatively) until `expected` workers sent their final batch; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while len(self.finished) < expected and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return len(self.finished) >= expected
