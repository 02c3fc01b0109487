"""Read a run folder (`vlab.core.runfolder`, `vlab.core.records`) into pandas, robustly and without modifying it.

- `run.json` must exist, validate as `vlab.core.runfolder.RunMeta` and carry a readable records format; anything else
  is a `UserError` naming the file.
- `requests.csv` is read with the dtypes its columns declare (`vlab.core.records.COLUMNS`); a column that an older
  format lacks gets its declared `missing` value; a trailing partial line (a run cut mid-write) is dropped; a file
  without data rows is an empty run (`UserError`); a cell that is not a number names the file, row and column.
- `tokens.csv` (possibly 100M rows) is never loaded whole: `token_pass` streams it once in chunks, reading request
  ids as categories, `i` as int32 and `t_ms` as float32 (float32 keeps ~0.01 ms at 100 s, ample for gaps), and
  gives both the pooled ITL gaps per group and the output tokens received per `BIN_S` of wall-clock time.
- `levels.csv` gives each level's wall-clock start and end (Unix s); a missing end (run still going or cut) is taken
  from the level's last request end, else from the next level's start, else from `run.json["ended_at"]`.

Every parsing problem becomes one `UserError` line "<file>: <problem>".
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.core.errors import UserError
from vlab.core.records import COLUMNS, RECORDS_FORMAT
from vlab.core.runfolder import LEVELS_CSV, REQUESTS_CSV, TOKENS_CSV, RunMeta, read_run_meta
from vlab.core.scenario import LoadConfig, Scenario

_PANDAS_DTYPE: dict[str, Any] = {
    "str": str, "category": "category", "float64": np.float64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "bool": np.int8,
}  # fmt: skip
REQUEST_DTYPES: dict[str, Any] = {name: _PANDAS_DTYPE[col.dtype] for name, col in COLUMNS.items()}
"""How each requests.csv column is read: from the record's own declaration (`vlab.core.records`)."""
TOKEN_DTYPES: dict[str, Any] = {"request_id": "category", "i": np.int32, "t_ms": np.float32}
TOKEN_CHUNK_ROWS = 4_000_000


@dataclass
class RunData:
    """One run folder, loaded. `requests` has one row per request plus `end_s` (Unix s) = t_start_s + e2e_ms/1000
    (t_start_s when e2e is unknown); `levels` has level, target, start_s, end_s (Unix s)."""

    path: Path
    meta: RunMeta
    requests: pd.DataFrame
    levels: pd.DataFrame
    tokens_path: Path | None
    dropped_partial_lines: list[str]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def scenario(self) -> Scenario:
        return self.meta.scenario

    @property
    def load_config(self) -> LoadConfig:
        return self.scenario.load

    @property
    def warmup_s(self) -> float:
        return float(self.load_config.warmup_s)

    @property
    def cooldown_s(self) -> float:
        return float(self.load_config.cooldown_s)

    @property
    def open_loop(self) -> bool:
        return self.load_config.open_loop

    @property
    def slo(self) -> dict[str, float]:
        """The SLO limits that are set, ms: keys among ttft_ms, itl_ms, tpot_ms, e2e_ms."""
        return {k: float(v) for k, v in self.scenario.slo.model_dump().items() if v is not None}

    @property
    def label(self) -> str:
        """Run folder name, scenario name and server profile, for legends."""
        parts = [self.name, self.scenario.name, self.meta.server_profile or ""]
        return " · ".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------------------ raw files
class _Head(io.RawIOBase):
    """A read-only view of the first `limit` bytes of a binary file (to skip a trailing partial line)."""

    def __init__(self, handle: io.BufferedReader, limit: int) -> None:
        self._handle = handle
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        n = min(len(view), self._left)
        if n <= 0:
            return 0
        got = self._handle.readinto(view[:n])
        self._left -= got or 0
        return got or 0

    def close(self) -> None:
        self._handle.close()
        super().close()


def _complete_size(path: Path) -> tuple[int, int]:
    """(size of the file up to and including its last newline, total size) in bytes."""
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1, size
            pos = start
    return 0, size


@dataclass
class _Source:
    """A CSV to hand to pandas: the path, or a bounded reader when a partial last line must be skipped."""

    path: Path
    limit: int
    size: int

    @property
    def truncated(self) -> bool:
        return self.limit < self.size

    def open(self) -> Any:
        if not self.truncated:
            return self.path
        return io.BufferedReader(_Head(self.path.open("rb"), self.limit), buffer_size=1 << 20)


def _source(path: Path) -> _Source:
    limit, size = _complete_size(path)
    return _Source(path, limit, size)


def _corrupt(path: Path, exc: BaseException) -> UserError:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    return UserError(f"{path}: corrupt CSV: {detail}")


def _bad_cell(path: Path, header: list[str], exc: BaseException, numeric: set[str] | None = None) -> UserError:
    """A parse error of a CSV, with the row and column of the first cell that is not the number its column holds
    (`numeric`: the numeric columns, default those of requests.csv); the parser's own message if none is found."""
    if numeric is None:
        numeric = {c for c, dt in REQUEST_DTYPES.items() if dt not in (str, "category")}
    import csv

    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row_no, row in enumerate(csv.reader(fh), start=1):
            if row_no == 1:
                continue
            for name, cell in zip(header, row, strict=False):
                if name in numeric and cell != "":
                    try:
                        float(cell)
                    except ValueError:
                        return UserError(f"{path}: row {row_no}, column {name!r}: not a number: {cell[:40]!r}")
    return _corrupt(path, exc)


_CSV_ERRORS = (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError)


def _header(path: Path) -> list[str]:
    with path.open("rb") as fh:
        line = fh.readline()
    try:
        return line.decode("utf-8").strip().split(",") if line else []
    except UnicodeDecodeError as exc:
        raise _corrupt(path, exc) from None


# ------------------------------------------------------------------------------------------------------ run files
def read_meta(run_dir: Path) -> RunMeta:
    """run.json, validated, with a records format this report reads (`vlab.core.runfolder.read_run_meta`)."""
    return read_run_meta(run_dir)


def read_requests(path: Path, records_format: int = RECORDS_FORMAT) -> tuple[pd.DataFrame, bool]:
    """requests.csv with its declared dtypes; (frame, whether a trailing partial line was dropped)."""
    if not path.is_file():
        raise UserError(f"{path}: requests.csv not found: the run recorded no requests")
    header = _header(path)
    if not header or header == [""]:
        raise UserError(f"{path}: empty file: the run recorded no requests")
    required = [name for name, col in COLUMNS.items() if col.missing is None]
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path}: corrupt CSV: missing column(s) {', '.join(missing)}")
    present = [c for c in COLUMNS if c in header]
    src = _source(path)
    try:
        frame = pd.read_csv(
            src.open(), usecols=present, dtype={c: REQUEST_DTYPES[c] for c in present}, keep_default_na=False,
            na_values=[""],
        )  # fmt: skip
    except _CSV_ERRORS as exc:
        raise _bad_cell(path, header, exc) from None
    if frame.empty:
        raise UserError(f"{path}: no requests recorded (only a header)")
    for name, col in COLUMNS.items():
        if name not in frame:
            frame[name] = frame["ttft_ms"] if name == "first_chunk_ms" and records_format == 1 else col.missing
    frame = frame[list(COLUMNS)]
    for name, col in COLUMNS.items():
        if col.dtype == "bool":
            frame[name] = frame[name].astype(bool)
    for text_col in ("error_kind", "error", "finish_reason"):
        series = frame[text_col]
        if "" not in series.cat.categories:
            series = series.cat.add_categories([""])
        frame[text_col] = series.fillna("")
    e2e_s = frame["e2e_ms"].to_numpy() / 1000.0
    start = frame["t_start_s"].to_numpy()
    frame["end_s"] = np.where(np.isfinite(e2e_s), start + e2e_s, start)
    return frame, src.truncated


def read_levels(path: Path, requests: pd.DataFrame, ended_at: float | None) -> tuple[pd.DataFrame, bool]:
    """levels.csv (or levels inferred from the requests when it is missing), ends filled in; sorted by level."""
    truncated = False
    if path.is_file():
        src = _source(path)
        truncated = src.truncated
        try:
            levels = pd.read_csv(
                src.open(),
                usecols=lambda c: c in ("level", "target", "start_s", "end_s", "ended_by"),
                dtype={"level": np.int32, "target": np.float64, "start_s": np.float64, "end_s": np.float64,
                       "ended_by": str},
                keep_default_na=False, na_values={"end_s": [""]},
            )  # fmt: skip
        except _CSV_ERRORS as exc:
            raise _corrupt(path, exc) from None
    else:
        levels = pd.DataFrame(columns=["level", "target", "start_s", "end_s"])
    if "ended_by" not in levels:
        levels["ended_by"] = ""
    in_levels = requests[requests["level"] >= 0]
    by_level = in_levels.groupby("level", sort=True).agg(
        target=("level_target", "first"), first=("t_start_s", "min"), last=("end_s", "max")
    )
    known = set(levels["level"].tolist())
    extra = [
        {"level": lv, "target": row.target, "start_s": row.first, "end_s": math.nan, "ended_by": ""}
        for lv, row in by_level.iterrows()
        if lv not in known
    ]
    if extra:
        levels = pd.concat([levels, pd.DataFrame(extra)], ignore_index=True) if len(levels) else pd.DataFrame(extra)
    levels = levels.astype({"level": np.int32, "target": np.float64, "start_s": np.float64, "end_s": np.float64})
    levels = levels.sort_values("level", kind="stable").reset_index(drop=True)
    ends = levels["end_s"].to_numpy().copy()
    starts = levels["start_s"].to_numpy()
    for i in np.flatnonzero(~np.isfinite(ends)):
        lv = int(levels["level"].iat[i])
        if lv in by_level.index:
            ends[i] = float(by_level.at[lv, "last"])
        elif i + 1 < len(levels):
            ends[i] = starts[i + 1]
        elif ended_at:
            ends[i] = float(ended_at)
        else:
            ends[i] = starts[i]
    levels["end_s"] = ends
    return levels, truncated


def load_run(run_dir: Path | str) -> RunData:
    """Load one run folder; every problem is a one-line `UserError` naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a folder")
    meta = read_meta(run_dir)
    dropped: list[str] = []
    requests, cut = read_requests(run_dir / REQUESTS_CSV, meta.format)
    if cut:
        dropped.append(REQUESTS_CSV)
    levels, cut = read_levels(run_dir / LEVELS_CSV, requests, meta.ended_at)
    if cut:
        dropped.append(LEVELS_CSV)
    tokens = run_dir / TOKENS_CSV
    tokens_path = tokens if tokens.is_file() else None
    if tokens_path is not None:
        header = _header(tokens_path)
        if header[:3] != ["request_id", "i", "t_ms"]:
            raise UserError(f"{tokens_path}: corrupt CSV: expected header request_id,i,t_ms")
        if _source(tokens_path).truncated:
            dropped.append(TOKENS_CSV)
    return RunData(run_dir, meta, requests, levels, tokens_path, dropped)


# ------------------------------------------------------------------------------------------------------ token gaps
def _token_chunks(path: Path) -> Iterator[pd.DataFrame]:
    src = _source(path)
    try:
        reader = pd.read_csv(
            src.open(), usecols=["request_id", "i", "t_ms"], dtype=TOKEN_DTYPES, chunksize=TOKEN_CHUNK_ROWS
        )
        yield from reader
    except _CSV_ERRORS as exc:
        raise _bad_cell(path, _header(path), exc, {"i", "t_ms"}) from None


BIN_S = 0.01
"""Width of the token-arrival histogram's bins, seconds."""


@dataclass
class TokenPass:
    """What one streaming pass over tokens.csv gives.

    - `gaps[g]`: pooled ITL gaps in ms (float32) of the requests of group g: t_ms[i] − t_ms[i−1] of consecutive token
      events of one request; `gap_rows[g]`: the request row of each gap (for resampling whole requests).
    - `arrivals`: output tokens received per `BIN_S` bin of wall-clock time since `t0_s`: each token event of a
      request counts its request's tokens per event (completion_tokens / token events, ≥ 1), at its arrival
      (t_start_s + t_ms / 1000), whatever its level — the server's delivered output over time.
    """

    gaps: dict[int, np.ndarray]
    gap_rows: dict[int, np.ndarray]
    t0_s: float
    arrivals: np.ndarray

    def _bin(self, t: float) -> int:
        """The bin edge nearest Unix time `t` (edges every BIN_S from t0_s), clipped to the bins held."""
        return int(np.clip(np.rint((t - self.t0_s) / BIN_S), 0, self.arrivals.size))

    def tokens_between(self, lo: float, hi: float) -> float:
        """Output tokens received in [lo, hi) (Unix s), each end taken to its nearest bin edge (within BIN_S / 2)."""
        if hi <= lo or self.arrivals.size == 0:
            return 0.0
        return float(self.arrivals[self._bin(lo) : self._bin(hi)].sum())

    def per_second(self, lo: float, hi: float) -> np.ndarray:
        """Output tokens received in each whole second of [lo, hi): consecutive, non-overlapping runs of 1 / BIN_S
        bins from lo's edge (for confidence intervals of a rate; their mean is the rate over those seconds)."""
        per = round(1.0 / BIN_S)
        a = self._bin(lo)
        n = (self._bin(hi) - a) // per
        if n <= 0:
            return np.empty(0)
        return self.arrivals[a : a + n * per].reshape(n, per).sum(axis=1)


def token_pass(run: RunData, group: np.ndarray) -> TokenPass:
    """Stream tokens.csv once (see `TokenPass`). `group[r]` is the group (e.g. level) of request row `r` whose gaps
    are pooled, −1 to leave its gaps out (its tokens still count as arrivals).

    The sink writes each request's token rows contiguously and in order (`vlab.locust.sink`); a gap is taken only
    between rows of the same request whose `i` differ by exactly 1. Rows of requests absent from requests.csv are
    ignored. Each chunk's last row is carried to the next.
    """
    req = run.requests
    start = req["t_start_s"].to_numpy(dtype=float)
    finite = start[np.isfinite(start)]
    t0 = float(finite.min()) if finite.size else 0.0
    last = float(np.nanmax(req["end_s"].to_numpy(dtype=float))) if len(req) else t0
    n_bins = max(1, int(np.ceil((max(last, t0) - t0) / BIN_S)) + 2)
    arrivals = np.zeros(n_bins)
    events = req["n_events"].to_numpy(dtype=float)
    completion = req["completion_tokens"].to_numpy(dtype=float)
    per_event = np.where((events > 0) & (completion >= events), completion / np.maximum(events, 1), 1.0)
    gaps_out: dict[int, list[np.ndarray]] = {}
    rows_out: dict[int, list[np.ndarray]] = {}
    if run.tokens_path is None:
        return TokenPass({}, {}, t0, arrivals)
    row_of_id = pd.Series(np.arange(len(req)), index=req["request_id"].to_numpy())
    row_of_id = row_of_id[~row_of_id.index.duplicated()]
    carry: tuple[int, int, float] | None = None
    for chunk in _token_chunks(run.tokens_path):
        if chunk.empty:
            continue
        ids = chunk["request_id"]
        cat_rows = row_of_id.reindex(ids.cat.categories).fillna(-1).to_numpy().astype(np.int64)
        codes = ids.cat.codes.to_numpy()
        rows = np.where(codes >= 0, cat_rows[codes], -1)
        idx = chunk["i"].to_numpy()
        t = chunk["t_ms"].to_numpy()
        known = rows >= 0
        when = start[rows[known]] + t[known].astype(np.float64) / 1000.0
        bins = np.clip(((when - t0) / BIN_S).astype(np.int64), 0, n_bins - 1)
        arrivals += np.bincount(bins, weights=per_event[rows[known]], minlength=n_bins)
        if carry is not None:
            rows = np.concatenate([[carry[0]], rows])
            idx = np.concatenate([np.asarray([carry[1]], dtype=idx.dtype), idx])
            t = np.concatenate([np.asarray([carry[2]], dtype=t.dtype), t])
        carry = (int(rows[-1]), int(idx[-1]), float(t[-1]))
        same = (rows[1:] == rows[:-1]) & (idx[1:] == idx[:-1] + 1) & (rows[1:] >= 0)
        gap_rows = rows[1:][same]
        gaps = (t[1:] - t[:-1])[same]
        g = group[gap_rows]
        keep = g >= 0
        gaps, g, gap_rows = gaps[keep], g[keep], gap_rows[keep]
        if gaps.size == 0:
            continue
        order = np.argsort(g, kind="stable")
        gs = g[order]
        bounds = np.flatnonzero(np.diff(gs)) + 1
        for part_idx, part in zip(np.split(order, bounds), np.split(gs, bounds), strict=False):
            gaps_out.setdefault(int(part[0]), []).append(gaps[part_idx])
            rows_out.setdefault(int(part[0]), []).append(gap_rows[part_idx])
    return TokenPass(
        {k: np.concatenate(v) for k, v in gaps_out.items()},
        {k: np.concatenate(v) for k, v in rows_out.items()},
        t0,
        arrivals,
    )
