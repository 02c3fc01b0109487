"""Following a run as it is written: incremental readers of the run folder's CSVs and the live series built from
them. Free of Locust (importable anywhere); the web UI's console (`vlab.locust.webui`) serves what these compute."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlab.core.metrics import summarize
from vlab.core.records import COLUMNS
from vlab.core.runfolder import MONITOR_CSV, REQUESTS_CSV, RUN_JSON, SERVER_METRICS_CSV
from vlab.core.tail import CsvTail

BUCKET_S = 2.0
"""Width of one point of the live series, seconds (requests are binned by the time their last token arrived)."""
SETTLE_S = 2.0
"""A bucket is charted once it ended this many seconds ago: records reach requests.csv ≤ ~1.5 s after the request
ended (sink flush every 0.5 s; in distributed runs plus the worker's 0.5 s batch), so older buckets are complete."""
RATE_WINDOW = 3
"""Slots averaged for the rate series (output tokens/s, requests/s): 3 × 2 s = the trailing 6 s."""
MAX_POINTS = 1800
"""Points kept per chart: 1800 × 2 s = the last hour."""
TABLE_COLUMNS: tuple[str, ...] = ("ttft_ms", "itl_mean_ms", "tpot_ms", "e2e_ms")
"""The record columns (`vlab.core.records.COLUMNS`, all in ms) of the live percentile tables: add one here to show
it live."""
TABLE_METRICS: tuple[tuple[str, str], ...] = tuple(
    (name.removesuffix("_ms"), f"{COLUMNS[name].label} {COLUMNS[name].unit}") for name in TABLE_COLUMNS
)
"""Key in `RecordTail.cols` (the column without `_ms`) → label, both from the record's declaration."""
STATS: tuple[str, ...] = ("n", "mean", "p50", "p90", "p95", "p99", "p999", "max")


def _num(text: str) -> float:
    """A CSV cell as a float; '' (the records' NaN) or junk → NaN."""
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def _finite(x: float) -> float | None:
    """JSON-safe: NaN/inf → None."""
    return x if math.isfinite(x) else None


@dataclass
class _Bucket:
    """What happened in one BUCKET_S-wide slot of wall-clock time (slot k covers [k·B, (k+1)·B) Unix seconds)."""

    ttft: list[float] = field(default_factory=list)
    """TTFT (ms) of the successful requests whose last token arrived in the slot."""
    itl: list[float] = field(default_factory=list)
    """Per-request mean ITL (ms) of those requests."""
    out_tokens: float = 0.0
    """Output tokens (usage.completion_tokens) of those requests."""
    n_ok: int = 0
    n_failed: int = 0
    busy_s: float = 0.0
    """Sum over all recorded requests of their time in flight inside the slot, s (÷ B = mean requests in flight)."""
    users: list[int] = field(default_factory=list)
    """Locust's user count, sampled in the slot."""
    running: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    kv: list[float] = field(default_factory=list)
    """Server samples (server_metrics.csv) in the slot: running / waiting requests, KV-cache usage fraction."""
    events: float = 0.0
    """SSE events the load processes received in the slot (client_monitor.csv `events_rx`): streams in flight too."""
    live_ttft: list[float] = field(default_factory=list)
    live_ttft95: list[float] = field(default_factory=list)
    live_itl: list[float] = field(default_factory=list)
    live_itl95: list[float] = field(default_factory=list)
    """The monitor's live p50/p95 TTFT and p50/p95 read gaps (ms) of each process sample in the slot."""
    monitored: bool = False
    """A monitor sample fell in the slot: the live values above are the charts' source."""
    point: dict[str, float | None] | None = None
    """Cached chart values; cleared whenever the slot gets new data."""


class RecordTail:
    """The run's records, read incrementally from `run_dir/requests.csv` (+ `server_metrics.csv` and the load
    processes' `client_monitor.csv`, whose raw-read figures chart streams that are still in flight)."""

    COLUMNS = ("endpoint", "node", "level", "ok", "t_start_s", "ttft_ms", "e2e_ms", "itl_mean_ms", "tpot_ms")

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.requests = CsvTail(run_dir / REQUESTS_CSV)
        self.server = CsvTail(run_dir / SERVER_METRICS_CSV)
        self.monitor = CsvTail(run_dir / MONITOR_CSV)
        self.cols: dict[str, list[float]] = {k: [] for k in ("level", "ok", *(key for key, _ in TABLE_METRICS))}
        """Per request, in file order: level index, ok (1/0) and the metrics in ms (NaN when undefined)."""
        self.endpoint: list[str] = []
        self.nodes: dict[str, int] = {}
        """Requests recorded per load-generator process."""
        self.buckets: dict[int, _Bucket] = {}
        self.t0: float | None = None
        """Run start (run.json started_at), Unix s: the charts' time origin."""
        self._summaries: tuple[tuple[int, int | None], dict[str, Any]] | None = None

    @property
    def n(self) -> int:
        return len(self.endpoint)

    def _bucket(self, t_s: float) -> _Bucket:
        key = int(t_s // BUCKET_S)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket()
        bucket.point = None
        return bucket

    def poll(self) -> int:
        """Parse what was appended since the last call; return the number of new requests."""
        if self.t0 is None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                self.t0 = float(json.loads((self.run_dir / RUN_JSON).read_text())["started_at"])
        rows = self.requests.read_new()
        header = self.requests.header
        if rows and header is not None:
            self._add_requests(rows, {name: header.index(name) for name in header})
        self._add_server(self.server.read_new())
        self._add_monitor(self.monitor.read_new())
        return len(rows)

    def _add_requests(self, rows: list[list[str]], idx: dict[str, int]) -> None:
        i_end, i_node, i_level, i_ok = idx["endpoint"], idx["node"], idx["level"], idx["ok"]
        i_start, i_ttft, i_e2e = idx["t_start_s"], idx["ttft_ms"], idx["e2e_ms"]
        i_itl, i_out = idx["itl_mean_ms"], idx["completion_tokens"]
        table = [(key, idx.get(name)) for (key, _), name in zip(TABLE_METRICS, TABLE_COLUMNS, strict=True)]
        width = len(idx)
        for row in rows:
            if len(row) != width:
                continue  # not a records row (cannot happen with whole-line appends); never guess
            ok = row[i_ok] == "1"
            t_start, e2e = _num(row[i_start]), _num(row[i_e2e])
            ttft, itl = _num(row[i_ttft]), _num(row[i_itl])
            self.endpoint.append(row[i_end])
            self.nodes[row[i_node]] = self.nodes.get(row[i_node], 0) + 1
            self.cols["level"].append(_num(row[i_level]))
            self.cols["ok"].append(1.0 if ok else 0.0)
            for key, i in table:  # a column older runs lack reads as NaN
                self.cols[key].append(_num(row[i]) if i is not None else math.nan)
            if not math.isfinite(t_start):
                continue
            t_end = t_start + e2e / 1000.0 if math.isfinite(e2e) else t_start
            bucket = self._bucket(t_end)
            if ok:
                bucket.n_ok += 1
                bucket.ttft.append(ttft)
                bucket.itl.append(itl)
                out = _num(row[i_out])
                bucket.out_tokens += out if out > 0 else 0.0
            else:
                bucket.n_failed += 1
            k = int(t_start // BUCKET_S)
            while k * BUCKET_S < t_end:  # time in flight, spread over the slots the request spans
                lo, hi = max(t_start, k * BUCKET_S), min(t_end, (k + 1) * BUCKET_S)
                self._bucket(k * BUCKET_S).busy_s += max(0.0, hi - lo)
                k += 1

    def _add_server(self, rows: list[list[str]]) -> None:
        header = self.server.header
        if not rows or header is None or "t_s" not in header:
            return
        idx = {name: header.index(name) for name in header}
        for row in rows:
            if len(row) != len(header):
                continue
            t = _num(row[idx["t_s"]])
            if not math.isfinite(t):
                continue
            bucket = self._bucket(t)
            for name, values in (("running", bucket.running), ("waiting", bucket.waiting)):
                if name in idx and math.isfinite(v := _num(row[idx[name]])):
                    values.append(v)
            if "kv_cache_usage" in idx and math.isfinite(v := _num(row[idx["kv_cache_usage"]])):
                bucket.kv.append(v)

    def _add_monitor(self, rows: list[list[str]]) -> None:
        header = self.monitor.header
        if not rows or header is None or "events_rx" not in header:
            return  # a run from before the live columns
        idx = {name: header.index(name) for name in header}
        for row in rows:
            if len(row) != len(header):
                continue
            t = _num(row[idx["t_s"]])
            if not math.isfinite(t):
                continue
            bucket = self._bucket(t)
            bucket.monitored = True
            events = _num(row[idx["events_rx"]])
            bucket.events += events if math.isfinite(events) else 0.0
            for name, values in (("ttft_p50_ms", bucket.live_ttft), ("ttft_p95_ms", bucket.live_ttft95),
                                 ("itl_p50_ms", bucket.live_itl), ("itl_p95_ms", bucket.live_itl95)):  # fmt: skip
                if math.isfinite(v := _num(row[idx[name]])):
                    values.append(v)

    def add_users(self, t_s: float, users: int) -> None:
        """Note Locust's user count at Unix time `t_s` (sampled by the UI's greenlet)."""
        self._bucket(t_s).users.append(users)

    # ----------------------------------------------------------------------------------------------- outputs
    def series(self, until_s: float) -> dict[str, list[float | None]]:
        """The live series, one point per slot that ended by `until_s` (Unix s); `t` = slot end − t0 in seconds.

        While streams are in flight the load processes' own samples (`client_monitor.csv`) are the source: out_tok_s
        = events received per second (≈ output tokens/s; a multi-token event counts once), ttft_p50 = their live
        first-read TTFT, itl_p50/p95 = their live read gaps. Slots without a monitor sample (older runs) fall back to
        the records: TTFT/ITL of requests that ended in the slot and their output tokens. Rates are trailing means
        over RATE_WINDOW slots. Also req_s (successful requests/s ending), in_flight (mean requests in flight from
        the records), users (Locust's count), and from the server's /metrics: running, waiting, kv_pct (%).
        """
        keys = sorted(k for k in self.buckets if (k + 1) * BUCKET_S <= until_s)
        if keys:
            keys = list(range(max(keys[0], keys[-1] - MAX_POINTS + 1), keys[-1] + 1))
        t0 = self.t0 if self.t0 is not None else (keys[0] * BUCKET_S if keys else 0.0)
        names = ("ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "out_tok_s", "req_s", "in_flight", "users")
        out: dict[str, list[float | None]] = {name: [] for name in ("t", *names, "running", "waiting", "kv_pct")}
        empty = _Bucket()
        for k in keys:
            bucket = self.buckets.get(k, empty)
            if bucket.point is None:
                bucket.point = _point(bucket)
            out["t"].append(round((k + 1) * BUCKET_S - t0, 3))
            for name, value in bucket.point.items():
                out[name].append(value)
        for name in ("out_tok_s", "req_s"):  # per-slot rates → trailing mean over RATE_WINDOW slots
            raw = [v or 0.0 for v in out[name]]
            out[name] = [
                round(sum(raw[max(0, i - RATE_WINDOW + 1) : i + 1]) / min(i + 1, RATE_WINDOW), 3)
                for i in range(len(raw))
            ]
        return out

    def summaries(self, level_index: int | None = None) -> dict[str, Any]:
        """Exact percentiles (vlab.core.metrics.summarize) per endpoint over the successful requests: `run` (all of
        them) and `level` (those sent in level `level_index`: the level in force, which the page's header shows;
        default the latest level in the records). Cached per record count and level."""
        key = (self.n, level_index)
        if self._summaries is not None and self._summaries[0] == key:
            return self._summaries[1]
        ok = np.asarray(self.cols["ok"]) == 1.0
        level = np.asarray(self.cols["level"])
        endpoint = np.asarray(self.endpoint, dtype=object)
        if level_index is not None:
            last_level = float(level_index)
        else:
            last_level = float(np.nanmax(level)) if self.n and np.isfinite(level).any() else math.nan
        metric = {key: np.asarray(self.cols[key]) for key, _ in TABLE_METRICS}
        result: dict[str, Any] = {"run": [], "level": [], "level_index": _finite(last_level)}
        for scope, mask in (("run", ok), ("level", ok & (level == last_level))):
            for name in sorted(set(endpoint[mask].tolist())):
                sel = mask & (endpoint == name)
                for metric_key, label in TABLE_METRICS:
                    s = summarize(metric[metric_key][sel]).as_dict()
                    row: dict[str, Any] = {"endpoint": name, "metric": metric_key, "label": label}
                    row.update({stat: _finite(float(s[stat])) for stat in STATS})
                    result[scope].append(row)
        self._summaries = (key, result)
        return result


def _point(b: _Bucket) -> dict[str, float | None]:
    ttft = summarize(b.ttft)
    itl = summarize(b.itl)

    def mean(values: list[float], scale: float = 1.0) -> float | None:
        return round(float(np.mean(values)) * scale, 3) if values else None

    def median(values: list[float]) -> float | None:
        return round(float(np.median(values)), 3) if values else None

    if b.monitored:
        live = {"ttft_p50": median(b.live_ttft), "ttft_p95": median(b.live_ttft95),
                "itl_p50": median(b.live_itl), "itl_p95": median(b.live_itl95),
                "out_tok_s": round(b.events / BUCKET_S, 3)}  # fmt: skip
    else:
        live = {"ttft_p50": _finite(ttft.p50), "ttft_p95": _finite(ttft.p95), "itl_p50": _finite(itl.p50),
                "itl_p95": _finite(itl.p95), "out_tok_s": round(b.out_tokens / BUCKET_S, 3)}  # fmt: skip
    return {
        **live,
        "req_s": round(b.n_ok / BUCKET_S, 3),
        "in_flight": round(b.busy_s / BUCKET_S, 3),
        "users": float(max(b.users)) if b.users else None,
        "running": mean(b.running),
        "waiting": mean(b.waiting),
        "kv_pct": mean(b.kv, 100.0),
    }
