"""Where finished requests go: batched, whole-line appends to the run's CSV files.

Users hand over a record and its token times (`add`, no I/O); a background greenlet writes what has accumulated
every `interval_s` seconds with one `write` per file, and `close` writes the rest. Lines are always whole, so a
run interrupted at any moment leaves readable CSVs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gevent

from vlab.records import REQUESTS_CSV, TOKENS_CSV, TOKENS_HEADER, RequestRecord, token_lines


class CsvSink:
    """Appends records to `requests.csv` and token times to `tokens.csv` in `run_dir`."""

    def __init__(self, run_dir: Path, interval_s: float = 0.5) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self._requests = self._open(run_dir / REQUESTS_CSV, RequestRecord.csv_header())
        self._tokens = self._open(run_dir / TOKENS_CSV, TOKENS_HEADER)
        self._pending_requests: list[str] = []
        self._pending_tokens: list[str] = []
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

    def add(self, record: RequestRecord, token_times_ms: tuple[float, ...] | list[float]) -> None:
        """Queue one finished request (cheap: string formatting only, no I/O)."""
        self._pending_requests.append(record.csv_line())
        if token_times_ms:
            self._pending_tokens.append(token_lines(record.request_id, token_times_ms))

    def add_lines(self, request_lines: list[str], token_chunks: list[str]) -> None:
        """Queue already formatted lines (records that arrived from a worker process)."""
        self._pending_requests.extend(request_lines)
        self._pending_tokens.extend(token_chunks)

    def flush(self) -> None:
        with self._lock:
            requests, self._pending_requests = self._pending_requests, []
            tokens, self._pending_tokens = self._pending_tokens, []
            if tokens:  # tokens first: a request row never points at token rows that are not on disk
                self._tokens.write("".join(tokens))
                self._tokens.flush()
            if requests:
                self._requests.write("".join(requests))
                self._requests.flush()
                self.written += len(requests)

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            self.flush()

    def close(self) -> None:
        self._flusher.kill(block=False)
        self.flush()
        self._requests.close()
        self._tokens.close()
