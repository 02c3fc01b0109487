"""What every tool adapter and every bench shares: the workload, one request as a tool reported it, one run.

Clocks: every absolute time here is on CLOCK_MONOTONIC, in seconds (`mono_s`), the clock of the fake server's send
stamps (`time.perf_counter_ns()`) and of Python's `time.perf_counter()` / `time.monotonic()` in any process of this
machine. Tools that write wall-clock (Unix) times are mapped with `WallToMono`, measured once per run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / ".cache" / "models" / "smollm2-135m-instruct"
"""The local Hugging Face folder (tokenizer.json) every peer that needs a tokenizer is given."""
HF_CACHE = REPO / ".cache" / "peers" / "hf-cache"
"""A Hugging Face hub cache holding only links to MODEL_DIR's files, for tools that load tokenizers only by hub id
when HF_HUB_OFFLINE=1 (AIPerf 0.13.0)."""
HF_CACHE_REPO_ID = "vlab-local/smollm2-135m-instruct"


@dataclass(frozen=True)
class Workload:
    """One workload, given to every tool in its own terms.

    Closed loop at `concurrency`; tools bounded by a request count get `requests`, tools bounded by time get
    `duration_s` (both chosen to cover the same span of load).
    """

    endpoint: Literal["completions", "chat"]
    concurrency: int
    requests: int
    duration_s: float
    prompt_tokens: int
    output_tokens: int
    model: str
    ignore_eos: bool = True
    seed: int = 1

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


@dataclass
class ClientRequest:
    """One request as a tool recorded it (its own numbers, never recomputed from the server's truth).

    `rid` is the fake server's request id (its usage.prompt_tokens or response id), None when the tool kept
    neither. Times in ms unless `_s`; absolute times on CLOCK_MONOTONIC.
    """

    rid: int | None = None
    ok: bool = False
    error: str = ""
    cancelled: bool = False
    """Still in flight when the tool stopped its run (not a failure of the server)."""
    start_mono_s: float | None = None
    ttft_ms: float | None = None
    token_ms: list[float] | None = None
    """Arrival of every token event, ms since the send: only tools that keep per-event times."""
    first_token_mono_s: float | None = None
    last_token_mono_s: float | None = None
    itl_ms: float | None = None
    """The tool's own per-request ITL (its definition)."""
    tpot_ms: float | None = None
    """The tool's own per-request TPOT (its definition)."""
    e2e_ms: float | None = None
    output_tokens: int | None = None

    def event_times_mono_s(self, n_events: int) -> tuple[list[float], bool]:
        """Arrival times of the token events on CLOCK_MONOTONIC, and whether they are exact.

        Exact when the tool kept every event; otherwise `n_events` times spread evenly between the first and last
        token the tool recorded (good for evenly paced streams only, and said so wherever it is used).
        """
        if self.token_ms is not None and self.start_mono_s is not None:
            return [self.start_mono_s + t / 1000.0 for t in self.token_ms], True
        first, last = self.first_token_mono_s, self.last_token_mono_s
        if first is None or last is None or n_events <= 0:
            return [], False
        if n_events == 1:
            return [first], False
        step = (last - first) / (n_events - 1)
        return [first + i * step for i in range(n_events)], False


@dataclass
class Aggregates:
    """A tool's headline numbers, from its own summary file where it writes one. Times in ms."""

    ttft_ms: float = math.nan
    ttft_median_ms: float = math.nan
    itl_ms: float = math.nan
    itl_median_ms: float = math.nan
    tpot_ms: float = math.nan
    tpot_median_ms: float = math.nan
    output_tokens_per_s: float = math.nan
    output_tokens_mean: float = math.nan
    ok: int = 0
    errors: int = 0
    source: str = ""
    """Which file and keys these came from."""


@dataclass
class ToolReport:
    """What one tool run left: its per-request records and its aggregates."""

    requests: list[ClientRequest] = field(default_factory=list)
    aggregates: Aggregates = field(default_factory=Aggregates)
    per_event: bool = False
    """The tool keeps every token event's time (per-event ITL can be checked against the truth)."""
    notes: list[str] = field(default_factory=list)


class WallToMono:
    """Map Unix wall-clock seconds to CLOCK_MONOTONIC seconds (offset read once, ~1 µs resolution)."""

    def __init__(self) -> None:
        best = None
        for _ in range(5):  # the read pair with the smallest gap brackets the offset most tightly
            m0 = time.monotonic()
            w = time.time()
            m1 = time.monotonic()
            if best is None or m1 - m0 < best[0]:
                best = (m1 - m0, w - (m0 + m1) / 2)
        assert best is not None
        self.offset_s = best[1]

    def __call__(self, wall_s: float) -> float:
        return wall_s - self.offset_s


def ensure_hf_cache() -> Path:
    """Lay out HF_CACHE as a hub cache whose only snapshot links to MODEL_DIR's tokenizer files; return it."""
    repo = HF_CACHE / ("models--" + HF_CACHE_REPO_ID.replace("/", "--"))
    snap = repo / "snapshots" / "local"
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("local")
    for src in MODEL_DIR.iterdir():
        if src.suffix in (".json", ".jinja") and not src.name.startswith("."):
            link = snap / src.name
            if not link.exists():
                link.symlink_to(src)
    return HF_CACHE


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
