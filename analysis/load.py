"""Read a run folder (`vlab.core.runfolder`, `vlab.core.records`) into pandas, robustly and without modifying it.

- `run.json` must exist and carry `"format": RECORDS_FORMAT`; anything else is a `UserError` naming the file.
- `requests.csv` is read with explicit, compact dtypes; a trailing partial line (a run cut mid-write) is dropped;
  a file without data rows is an empty run (`UserError`).
- `tokens.csv` (possibly 100M rows) is never loaded whole: `pooled_gaps` streams it in chunks, reading request ids
  as categories, `i` as int32 and `t_ms` as float32 (float32 keeps ~0.01 ms at 100 s, ample for gaps).
- `levels.csv` gives each level's wall-clock start and end (Unix s); a missing end (run still going or cut) is taken
  from the level's last request end, else from the next level's start, else from `run.json["ended_at"]`.

Every parsing problem becomes one `UserError` line "<file>: <problem>".
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.core.errors import UserError
from vlab.core.records import RECORDS_FORMAT, REQUESTS_CSV, TOKENS_CSV, RequestRecord
from vlab.core.runfolder import LEVELS_CSV, RUN_JSON

REQUEST_DTYPES: dict[str, Any] = {
    "request_id": str,
    "level": np.int32,
    "level_target": np.float64,
    "user": np.int32,
    "node": "category",
    "endpoint": "category",
    "t_start_s": np.float64,
    "queue_wait_ms": np.float64,
    "ttft_ms": np.float64,
    "e2e_ms": np.float64,
    "itl_mean_ms": np.float64,
    "tpot_ms": np.float64,
    "n_events": np.int32,
    "prompt_tokens": np.int32,
    "completion_tokens": np.int32,
    "prompt_tokens_requested": np.int32,
    "max_tokens": np.int32,
    "finish_reason": "category",
    "multi_token": np.int8,
    "ok": np.int8,
    "status": np.int16,
    "error_kind": "category",
    "error": "category",
    "prefix_id": np.int32,
    "retrieval_ms": np.float64,
}
TOKEN_DTYPES: dict[str, Any] = {"request_id": "category", "i": np.int32, "t_ms": np.float32}
TOKEN_CHUNK_ROWS = 4_000_000


@dataclass
class RunData:
    """One run folder, loaded. `requests` has one row per request plus `end_s` (Unix s) = t_start_s + e2e_ms/1000
    (t_start_s when e2e is unknown); `levels` has level, target, start_s, end_s (Unix s)."""

    path: Path
    meta: dict[str, Any]
    requests: pd.DataFrame
    levels: pd.DataFrame
    tokens_path: Path | None
    dropped_partial_lines: list[str]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def scenario(self) -> dict[str, Any]:
        return self.meta.get("scenario") or {}

    @property
    def load_config(self) -> dict[str, Any]:
        return self.scenario.get("load") or {}

    @property
    def warmup_s(self) -> float:
        return float(self.load_config.get("warmup_s") or 0.0)

    @property
    def cooldown_s(self) -> float:
        return float(self.load_config.get("cooldown_s") or 0.0)

    @property
    def open_loop(self) -> bool:
        stages = self.load_config.get("stages") or []
        return bool(stages) and stages[0].get("rate") is not None

    @property
    def slo(self) -> dict[str, float]:
        """The SLO limits that are set, ms: keys among ttft_ms, itl_ms, tpot_ms, e2e_ms."""
        return {k: float(v) for k, v in (self.scenario.get("slo") or {}).items() if v is not None}

    @property
    def label(self) -> str:
        """Run folder name, scenario name and server profile, for legends."""
        parts = [self.name, str(self.scenario.get("name") or "")]
        if self.meta.get("server_profile"):
            parts.append(str(self.meta["server_profile"]))
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


_CSV_ERRORS = (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError)


def _header(path: Path) -> list[str]:
    with path.open("rb") as fh:
        line = fh.readline()
    try:
        return line.decode("utf-8").strip().split(",") if line else []
    except UnicodeDecodeError as exc:
        raise _corrupt(path, exc) from None


# ------------------------------------------------------------------------------------------------------ run files
def read_meta(run_dir: Path) -> dict[str, Any]:
    """run.json, checked for the records format this report reads."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise UserError(f"{path}: run.json not found (is {run_dir} a run folder?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run.json ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object")
    fmt = meta.get("format")
    if fmt != RECORDS_FORMAT:
        shown = "none" if fmt is None else repr(fmt)
        raise UserError(
            f"{path}: records format {shown}, but this report reads format {RECORDS_FORMAT}; "
            "re-run the scenario or use the suite version that recorded it"
        )
    return meta


def read_requests(path: Path) -> tuple[pd.DataFrame, bool]:
    """requests.csv with compact dtypes; (frame, whether a trailing partial line was dropped)."""
    if not path.is_file():
        raise UserError(f"{path}: requests.csv not found: the run recorded no requests")
    header = _header(path)
    missing = [c for c in RequestRecord.columns() if c not in header]
    if not header or header == [""]:
        raise UserError(f"{path}: empty file: the run recorded no requests")
    if missing:
        raise UserError(f"{path}: corrupt CSV: missing column(s) {', '.join(missing)}")
    src = _source(path)
    try:
        frame = pd.read_csv(
            src.open(), usecols=list(REQUEST_DTYPES), dtype=REQUEST_DTYPES, keep_default_na=False, na_values=[""]
        )
    except _CSV_ERRORS as exc:
        raise _corrupt(path, exc) from None
    if frame.empty:
        raise UserError(f"{path}: no requests recorded (only a header)")
    frame["ok"] = frame["ok"].astype(bool)
    frame["multi_token"] = frame["multi_token"].astype(bool)
    for col in ("error_kind", "error", "finish_reason"):
        series = frame[col]
        if "" not in series.cat.categories:
            series = series.cat.add_categories([""])
        frame[col] = series.fillna("")
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
                usecols=["level", "target", "start_s", "end_s"],
                dtype={"level": np.int32, "target": np.float64, "start_s": np.float64, "end_s": np.float64},
            )
        except _CSV_ERRORS as exc:
            raise _corrupt(path, exc) from None
    else:
        levels = pd.DataFrame(columns=["level", "target", "start_s", "end_s"])
    by_level = requests.groupby("level", sort=True).agg(
        target=("level_target", "first"), first=("t_start_s", "min"), last=("end_s", "max")
    )
    known = set(levels["level"].tolist())
    extra = [
        {"level": lv, "target": row.target, "start_s": row.first, "end_s": math.nan}
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
    requests, cut = read_requests(run_dir / REQUESTS_CSV)
    if cut:
        dropped.append(REQUESTS_CSV)
    levels, cut = read_levels(run_dir / LEVELS_CSV, requests, meta.get("ended_at"))
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
        raise _corrupt(path, exc) from None


def pooled_gaps(run: RunData, group: np.ndarray) -> dict[int, np.ndarray]:
    """Pooled ITL gaps in ms (float32) per group: gap = t_ms[i] − t_ms[i−1] of consecutive token events of one
    request. `group[r]` is the group (e.g. level) of request row `r`, −1 to leave the request out.

    The sink writes each request's token rows contiguously and in order (`vlab.locust.sink`); a gap is taken only between
    rows of the same request whose `i` differ by exactly 1. Rows of requests absent from requests.csv are ignored.
    Streams the file in chunks, carrying each chunk's last row to the next.
    """
    out: dict[int, list[np.ndarray]] = {}
    if run.tokens_path is None:
        return {}
    row_of_id = pd.Series(np.arange(len(run.requests)), index=run.requests["request_id"].to_numpy())
    row_of_id = row_of_id[~row_of_id.index.duplicated()]
    carry: tuple[int, int, float] | None = None
    for chunk in _token_chunks(run.tokens_path):
        if chunk.empty:
            continue
        ids = chunk["request_id"]
        cats = ids.cat.categories
        cat_rows = row_of_id.reindex(cats).fillna(-1).to_numpy().astype(np.int64)
        codes = ids.cat.codes.to_numpy()
        rows = np.where(codes >= 0, cat_rows[codes], -1)
        idx = chunk["i"].to_numpy()
        t = chunk["t_ms"].to_numpy()
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
        gaps, g = gaps[keep], g[keep]
        if gaps.size == 0:
            continue
        order = np.argsort(g, kind="stable")
        gs = g[order]
        bounds = np.flatnonzero(np.diff(gs)) + 1
        for part_idx, part in zip(np.split(order, bounds), np.split(gs, bounds), strict=False):
            out.setdefault(int(part[0]), []).append(gaps[part_idx])
    return {k: np.concatenate(v) for k, v in out.items()}
