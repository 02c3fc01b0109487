"""The scenario: one strict YAML document that defines a workload.

A scenario is composed of four sections, each its own model:

- `api`: which endpoint, model and credentials, and the timeouts;
- `load`: the load levels (closed loop: users per stage; open loop: arrival rate per stage), warm-up and cool-down;
- `data`: what is sent: prompt and output lengths, shared prefixes, datasets;
- `slo`: the latency objectives that define goodput.

Unknown keys are errors everywhere (`extra="forbid"`); `load_scenario` turns any problem into one `ConfigError`
line naming the file, the key path and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from vlab.core.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string with a unit: `20`, `20s`, `1.5m`, `500ms`, `1h` → seconds."""
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 30, '30s', '2m' or '500ms', got {value!r}")
        return float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------------------- lengths
class FixedLength(StrictModel):
    """Always the same number of tokens."""

    dist: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, description="Tokens.")

    def bounds(self) -> tuple[int, int]:
        return self.value, self.value


class UniformLength(StrictModel):
    """Uniformly distributed whole numbers of tokens in [min, max]."""

    dist: Literal["uniform"]
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def bounds(self) -> tuple[int, int]:
        return self.min, self.max


class NormalLength(StrictModel):
    """Normal(mean, std) rounded to whole tokens and clipped to [min, max]."""

    dist: Literal["normal"]
    mean: float = Field(gt=0)
    std: float = Field(ge=0)
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1, description="Default: mean + 4 std.")

    @model_validator(mode="after")
    def _ordered(self) -> NormalLength:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def bounds(self) -> tuple[int, int]:
        upper = self.max if self.max is not None else max(self.min, round(self.mean + 4 * self.std))
        return self.min, upper


def _length_shorthand(value: Any) -> Any:
    """`200` is shorthand for `{dist: fixed, value: 200}`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


Length = Annotated[
    FixedLength | UniformLength | NormalLength,
    BeforeValidator(_length_shorthand),
    Field(discriminator="dist"),
]


# --------------------------------------------------------------------------------------------------------------- api
class ApiConfig(StrictModel):
    """Where requests go and how they are sent."""

    endpoint: Literal["chat", "completions"] = Field(
        default="chat", description="`chat` → /v1/chat/completions, `completions` → /v1/completions."
    )
    model: str | None = Field(default=None, description="Model name; default: the first id the server lists.")
    host: str | None = Field(default=None, description="Base URL; `--host` on the command line wins.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (sent as a bearer token)."
    )
    api_key_file: Path | None = Field(default=None, description="File holding the API key (first line).")
    connect_timeout_s: Seconds = Field(default=10.0, gt=0, description="TCP connect timeout, seconds.")
    read_timeout_s: Seconds = Field(
        default=60.0, gt=0, description="Longest silence between two reads of a stream before it is a stall, seconds."
    )
    temperature: float = Field(default=0.0, ge=0)
    metrics_interval_s: Seconds = Field(
        default=0.5, description="How often the server's /metrics is sampled during the run, seconds; 0 = never."
    )

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


# -------------------------------------------------------------------------------------------------------------- load
class Stage(StrictModel):
    """One load level: either `users` (closed loop) or `rate` (open loop, requests/s), held for `duration`."""

    users: int | None = Field(default=None, ge=1, description="Concurrent users (closed loop).")
    rate: float | None = Field(default=None, gt=0, description="Target arrivals per second (open loop).")
    duration: Seconds = Field(gt=0, description="How long the level is held, seconds.")

    @model_validator(mode="after")
    def _one_kind(self) -> Stage:
        if (self.users is None) == (self.rate is None):
            raise ValueError("a stage sets exactly one of `users` or `rate`")
        return self

    @property
    def target(self) -> float:
        return float(self.users if self.users is not None else self.rate)  # type: ignore[arg-type]


class ArrivalConfig(StrictModel):
    """Open-loop arrivals from one global schedule (per process: rate / number of worker processes)."""

    process: Literal["constant", "poisson", "gamma"] = Field(
        default="poisson", description="Inter-arrival law: constant gaps, exponential gaps, or gamma gaps."
    )
    burstiness: float = Field(
        default=1.0, gt=0, description="Gamma shape k: 1 is Poisson, < 1 burstier, > 1 smoother (mean gap = 1/rate)."
    )
    max_in_flight: int = Field(
        default=64, ge=1, description="Cap on requests in flight; arrivals beyond it wait for a slot (time recorded)."
    )


class LoadConfig(StrictModel):
    """The load levels. Shorthand: `users: 4, duration: 30s` (or `rate: 2, duration: 30s`) is one stage."""

    stages: list[Stage] = Field(min_length=1)
    spawn_rate: float = Field(default=100.0, gt=0, description="Users started per second when a level rises.")
    arrival: ArrivalConfig = Field(default_factory=ArrivalConfig)
    warmup_s: Seconds = Field(default=0.0, description="Start of each level excluded from its metrics, seconds.")
    cooldown_s: Seconds = Field(default=0.0, description="End of each level excluded from its metrics, seconds.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stages" not in data and ("users" in data or "rate" in data):
            data = dict(data)
            stage = {k: data.pop(k) for k in ("users", "rate", "duration") if k in data}
            data["stages"] = [stage]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LoadConfig:
        kinds = {stage.users is not None for stage in self.stages}
        if len(kinds) > 1:
            raise ValueError("stages mix `users` and `rate`: a run is either closed loop or open loop")
        for stage in self.stages:
            if self.warmup_s + self.cooldown_s >= stage.duration:
                raise ValueError(
                    f"warmup_s + cooldown_s ({self.warmup_s + self.cooldown_s:g}) leave nothing of a "
                    f"{stage.duration:g} s stage to measure"
                )
        return self

    @property
    def open_loop(self) -> bool:
        return self.stages[0].rate is not None

    @property
    def duration_s(self) -> float:
        return sum(stage.duration for stage in self.stages)


# -------------------------------------------------------------------------------------------------------------- data
class SharedPrefix(StrictModel):
    """A common prefix in front of some prompts, for prefix-cache experiments."""

    tokens: int = Field(ge=1, description="Prefix length in tokens (counted in prompt_tokens).")
    fraction: float = Field(default=1.0, ge=0, le=1, description="Share of requests that start with a prefix.")
    count: int = Field(default=1, ge=1, description="Number of distinct prefixes, chosen uniformly.")


class DatasetConfig(StrictModel):
    """Prompts from a file instead of synthetic text."""

    path: Path
    format: Literal["jsonl", "sharegpt"] = Field(
        default="jsonl", description='`jsonl`: one {"prompt": ...} per line; `sharegpt`: conversations.'
    )
    multi_turn: bool = Field(
        default=False, description="sharegpt only: each user replays a conversation turn by turn, keeping history."
    )


class RagConfig(StrictModel):
    """Retrieve-then-generate requests (`locustfiles/rag_load.py`): questions answered from retrieved PDF chunks."""

    questions: Path = Field(description='JSONL file, one {"question": ...} per line.')
    corpus: Path | None = Field(
        default=None, description="PDF file or folder ingested at start when the collection is empty or stale."
    )
    db: Path | None = Field(default=None, description="chromadb folder (default .cache/rag).")
    collection: str = "docs"
    k: int = Field(default=4, ge=1, description="Chunks retrieved per question.")


class DataConfig(StrictModel):
    """What each request sends and asks for."""

    prompt_tokens: Length = Field(
        default_factory=lambda: FixedLength(value=200),
        description="Prompt length in tokens, exact (synthetic prompts; includes the chat template for `chat`).",
    )
    output_tokens: Length = Field(
        default_factory=lambda: FixedLength(value=128), description="`max_tokens` of each request."
    )
    ignore_eos: bool = Field(default=True, description="Force exactly `max_tokens` (vLLM extension).")
    shared_prefix: SharedPrefix | None = None
    dataset: DatasetConfig | None = None
    rag: RagConfig | None = None
    seed: int = Field(default=0, description="Seed of the prompt and length draws (salts stay unique per request).")

    @model_validator(mode="after")
    def _prefix_fits(self) -> DataConfig:
        if self.shared_prefix and self.dataset is None and self.shared_prefix.tokens >= self.prompt_tokens.bounds()[0]:
            raise ValueError(
                f"shared_prefix.tokens ({self.shared_prefix.tokens}) must be below the shortest prompt "
                f"({self.prompt_tokens.bounds()[0]} tokens)"
            )
        if self.dataset and self.dataset.multi_turn and self.dataset.format != "sharegpt":
            raise ValueError("dataset.multi_turn needs format: sharegpt")
        if self.rag and (self.dataset or self.shared_prefix):
            raise ValueError("rag builds its prompts from retrieval: not combinable with dataset or shared_prefix")
        return self


class SloConfig(StrictModel):
    """Latency objectives, milliseconds. A request meets the SLO when it succeeded and meets every one set."""

    ttft_ms: float | None = Field(default=None, gt=0)
    itl_ms: float | None = Field(default=None, gt=0, description="Applies to the request's mean inter-token gap.")
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)

    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.itl_ms, self.tpot_ms, self.e2e_ms))


class Scenario(StrictModel):
    """A whole workload definition."""

    name: str
    description: str = ""
    api: ApiConfig = Field(default_factory=ApiConfig)
    load: LoadConfig
    data: DataConfig = Field(default_factory=DataConfig)
    slo: SloConfig = Field(default_factory=SloConfig)


# ------------------------------------------------------------------------------------------------------------ loading
def _key_path(loc: tuple[Any, ...]) -> str:
    # Drop pydantic's union-member tags (e.g. 'fixed', 'function-before[...]') so the path reads like the YAML.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in {"fixed", "uniform", "normal"}))]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every problem becomes one `ConfigError` line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: scenario file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of scenario keys at the top level")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{path}: {_key_path(first['loc'])}: {message}{more}") from None
    data = scenario.data
    if data.dataset is not None:
        dataset = data.dataset.model_copy(update={"path": _existing(path, data.dataset.path, "data.dataset.path")})
        data = data.model_copy(update={"dataset": dataset})
    if data.rag is not None:
        update = {"questions": _existing(path, data.rag.questions, "data.rag.questions")}
        if data.rag.corpus is not None:
            update["corpus"] = _existing(path, data.rag.corpus, "data.rag.corpus")
        data = data.model_copy(update={"rag": data.rag.model_copy(update=update)})
    return scenario.model_copy(update={"data": data})


def _existing(scenario_path: Path, value: Path, key: str) -> Path:
    """A file named in a scenario: relative to the scenario's folder, else to the repository; it must exist."""
    from vlab.core.paths import REPO_ROOT

    candidates = [value] if value.is_absolute() else [scenario_path.parent / value, REPO_ROOT / value]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(f"{scenario_path}: {key}: file not found: {value}")
