"""The scenario: one strict YAML document that defines a workload.

A scenario is composed of four sections, each its own model:

- `api`: which endpoint, model and credentials, and the timeouts;
- `load`: the load levels (closed loop: users per stage; open loop: arrival rate per stage), warm-up and cool-down;
- `data`: what is sent: prompt and output lengths, shared prefixes, datasets, a request trace;
- `slo`: the latency objectives that define goodput.

Unknown keys are errors everywhere (`extra="forbid"`); `load_scenario` turns any problem into one `ConfigError`
line naming the file, the key path and what was expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlab.core.arrivals import ARRIVAL_LAWS
from vlab.core.errors import ConfigError
from vlab.core.traces import MOONCAKE_BLOCK_TOKENS, TraceFormat, load_trace
from vlab.core.yamlfile import read_yaml

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


class ChoiceLength(StrictModel):
    """One of the listed token counts, uniformly: e.g. a prefill sweep of several prompt lengths in one run."""

    dist: Literal["choice"]
    values: list[int] = Field(min_length=1, description="Token counts, each ≥ 1.")

    @model_validator(mode="after")
    def _positive(self) -> ChoiceLength:
        if min(self.values) < 1:
            raise ValueError("every value must be at least 1")
        return self

    def bounds(self) -> tuple[int, int]:
        return min(self.values), max(self.values)


def _length_shorthand(value: Any) -> Any:
    """`200` is shorthand for `{dist: fixed, value: 200}`; anything but a whole number or a mapping is refused with
    what is expected."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    if not isinstance(value, dict):
        raise ValueError(
            f"expected a token count (e.g. 256) or a distribution such as {{dist: uniform, min: 64, max: 512}}, "
            f"got {value!r}"
        )
    return value


Length = Annotated[
    FixedLength | UniformLength | NormalLength | ChoiceLength,
    BeforeValidator(_length_shorthand),
    Field(discriminator="dist"),
]


# --------------------------------------------------------------------------------------------------------------- api
Endpoint = Literal["chat", "completions", "responses", "embeddings"]
ENDPOINT_PATHS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}
SUITE_BODY_FIELDS = frozenset(
    {"model", "stream", "stream_options", "messages", "prompt", "input", "max_tokens", "max_output_tokens",
     "ignore_eos", "temperature"}
)  # fmt: skip
"""Request-body fields the workload sets (`vlab.locust.workload`); `api.extra_body` may not override them."""


class ApiConfig(StrictModel):
    """Where requests go and how they are sent."""

    endpoint: Endpoint = Field(
        default="chat",
        description="`chat` → /v1/chat/completions, `completions` → /v1/completions, `responses` → /v1/responses "
        "(streamed events), `embeddings` → /v1/embeddings (not streamed: latency and input tokens only).",
    )
    model: str | None = Field(default=None, description="Model name; default: the first id the server lists.")
    host: str | None = Field(default=None, description="Base URL; `--host` on the command line wins.")
    api_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the API key (sent as a bearer token); default: OPENAI_API_KEY "
        "when it is set, else no key.",
    )
    api_key_file: Path | None = Field(default=None, description="File holding the API key (first line).")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers; `${VAR}` in a value is replaced by the environment variable VAR when the run "
        "starts (the file and run.json keep the `${VAR}` form).",
    )
    tokenizer: str | None = Field(
        default=None,
        description="Local tokenizer for exact synthetic prompt lengths when the server has no /tokenize: a "
        "tokenizer.json file or a model folder holding one. Default: the server's /tokenize, else approximate.",
    )
    connect_timeout_s: Seconds = Field(default=10.0, gt=0, description="TCP connect timeout, seconds.")
    read_timeout_s: Seconds = Field(
        default=60.0, gt=0, description="Longest silence between two reads of a stream before it is a stall, seconds."
    )
    temperature: float = Field(default=0.0, ge=0)
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="More JSON fields for every request body, e.g. `structured_outputs` or `chat_template_kwargs: "
        "{enable_thinking: true}` (vLLM); fields the suite sets itself are refused.",
    )
    require_done: bool = Field(
        default=True,
        description="false: a stream that ends cleanly after its finish_reason chunk counts as complete without "
        "`data: [DONE]` (transformers serve 5.19 never sends it); true: such a stream is an error (`no_done`).",
    )
    metrics_interval_s: Seconds = Field(
        default=0.5, description="How often the server's /metrics is sampled during the run, seconds; 0 = never."
    )

    @field_validator("extra_body")
    @classmethod
    def _not_the_suites(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & SUITE_BODY_FIELDS)
        if taken:
            raise ValueError(
                f"{', '.join(taken)}: set by the suite (data.output_tokens, data.ignore_eos, api.temperature, "
                "api.model and the workload make them)"
            )
        return value

    @property
    def path(self) -> str:
        return ENDPOINT_PATHS[self.endpoint]

    @property
    def streamed(self) -> bool:
        """Whether the endpoint streams tokens (every one but embeddings)."""
        return self.endpoint != "embeddings"


# -------------------------------------------------------------------------------------------------------------- load
DEFAULT_CAP_S = 600.0
"""A level that waits for its request count ends at the latest after this long, unless `max_duration` says."""


class Stage(StrictModel):
    """One load level: `users` (closed loop), `rate` (open loop, requests/s) or `speed` (open loop: `data.trace`
    replayed at its recorded arrival times, sped up by this factor).

    It ends by time (`duration`), by count (`requests`), or both: whichever comes last, and at the latest at
    `max_duration`. Closed loop: `requests` counts the requests of the level that completed (ok or failed), warm-up
    included. Open loop: the level sends exactly `requests` arrivals (default rate × duration) at the rate. A trace
    level replays the trace's first `requests` rows (default all of them); when the scenario is read, its `rate` is
    derived from the trace (`vlab.core.traces.Trace.mean_rate`: rows / their replay span) and `requests` filled in, so
    it runs as an open-loop level of that rate whose arrivals come from the trace.
    """

    users: int | None = Field(default=None, ge=1, description="Concurrent users (closed loop).")
    rate: float | None = Field(
        default=None, gt=0, description="Target arrivals per second (open loop); derived for a trace level."
    )
    speed: float | None = Field(
        default=None, gt=0, description="Trace replay: 1 = the recorded times, 2 = twice as fast, 0.5 = half as fast."
    )
    duration: Seconds | None = Field(default=None, gt=0, description="Shortest time the level is held, seconds.")
    requests: int | None = Field(
        default=None, ge=1, description="Completed requests (closed loop) or arrivals (open loop) the level needs."
    )
    max_duration: Seconds | None = Field(
        default=None, gt=0, description=f"Cap on the level's time, seconds (default {DEFAULT_CAP_S:g} with `requests`)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Stage:
        if self.speed is not None:
            if self.users is not None or self.duration is not None:
                raise ValueError(
                    "a trace stage (`speed`) lasts as long as its trace at that speed: no `users` or `duration` "
                    "(`requests: N` replays the first N rows)"
                )
            return self
        if (self.users is None) == (self.rate is None):
            raise ValueError("a stage sets exactly one of `users`, `rate` or `speed`")
        if self.duration is None and self.requests is None:
            raise ValueError("a stage needs `duration`, `requests`, or both")
        if self.max_duration is not None and self.duration is not None and self.max_duration < self.duration:
            raise ValueError(f"max_duration ({self.max_duration:g}) is shorter than duration ({self.duration:g})")
        return self

    @property
    def min_s(self) -> float:
        """The least time the level runs, seconds (0 when only `requests` bounds it)."""
        return self.duration or 0.0

    @property
    def cap_s(self) -> float:
        """The most time the level runs, seconds (a trace level: at least its replay time)."""
        if self.max_duration is not None:
            return self.max_duration
        if self.speed is not None and self.rate is not None and self.requests is not None:
            return max(DEFAULT_CAP_S, self.requests / self.rate)
        if self.requests is None and self.duration is not None:
            return self.duration
        return max(DEFAULT_CAP_S, self.min_s)

    def arrivals(self) -> int:
        """Open loop: how many arrivals the level sends."""
        if self.requests is not None:
            return self.requests
        assert self.rate is not None and self.duration is not None
        return round(self.rate * self.duration)

    @property
    def target(self) -> float:
        """Users, or arrivals/s (NaN for a trace level whose rate is not derived yet: `resolve_files` does it)."""
        if self.users is not None:
            return float(self.users)
        return float(self.rate) if self.rate is not None else math.nan


class ArrivalConfig(StrictModel):
    """Open-loop arrivals from one global schedule (per process: rate / number of worker processes)."""

    process: str = Field(
        default="poisson",
        description="Inter-arrival law: " + "; ".join(f"`{k}`: {v.doc}" for k, v in ARRIVAL_LAWS.items()) + ".",
    )
    burstiness: float = Field(
        default=1.0, gt=0, description="Gamma shape k: 1 is Poisson, < 1 burstier, > 1 smoother (mean gap = 1/rate)."
    )
    max_in_flight: int = Field(
        default=64, ge=1, description="Cap on requests in flight; arrivals beyond it wait for a slot (time recorded)."
    )

    @field_validator("process")
    @classmethod
    def _known_law(cls, value: str) -> str:
        if value not in ARRIVAL_LAWS:
            raise ValueError(f"unknown arrival process {value!r} (known: {', '.join(ARRIVAL_LAWS)})")
        return value


class LoadConfig(StrictModel):
    """The load levels. Shorthand: `users: 4, duration: 30s` (or `rate: 2, duration: 30s`) is one stage."""

    SHORTHAND_KEYS: ClassVar[tuple[str, ...]] = ("users", "rate", "speed", "duration", "requests", "max_duration")

    stages: list[Stage] = Field(min_length=1)
    spawn_rate: float = Field(default=100.0, gt=0, description="Users started per second when a level rises.")
    arrival: ArrivalConfig = Field(default_factory=ArrivalConfig)
    warmup_s: Seconds = Field(default=0.0, description="Start of each level always excluded from its metrics, seconds.")
    cooldown_s: Seconds = Field(default=0.0, description="End of each level excluded from its metrics, seconds.")
    steady_state: Literal["auto", "off"] = Field(
        default="auto",
        description="`auto`: also cut each level's start-up transient, found from the data (MSER-5 on the "
        "requests' latencies in send order); `off`: only warmup_s.",
    )
    drain: bool = Field(
        default=True,
        description="At the end of a level no new request starts and those in flight finish before the next level "
        "begins (bounded by drain_timeout_s), so nothing is cut off between levels.",
    )
    drain_timeout_s: Seconds = Field(default=120.0, gt=0, description="Longest wait for a level's requests to end, s.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stages" not in data and any(k in data for k in ("users", "rate", "speed")):
            data = dict(data)
            stage = {k: data.pop(k) for k in cls.SHORTHAND_KEYS if k in data}
            data["stages"] = [stage]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LoadConfig:
        kinds = {stage.users is not None for stage in self.stages}
        if len(kinds) > 1:
            raise ValueError("stages mix `users` and `rate`: a run is either closed loop or open loop")
        if len({stage.speed is not None for stage in self.stages}) > 1:
            raise ValueError("stages mix `speed` with `users` or `rate`: a trace run replays its trace at every level")
        for stage in self.stages:
            if stage.duration is not None and self.warmup_s + self.cooldown_s >= stage.duration:
                raise ValueError(
                    f"warmup_s + cooldown_s ({self.warmup_s + self.cooldown_s:g}) leave nothing of a "
                    f"{stage.duration:g} s stage to measure"
                )
        return self

    @property
    def open_loop(self) -> bool:
        return self.stages[0].rate is not None or self.stages[0].speed is not None

    @property
    def replays_trace(self) -> bool:
        """The levels replay `data.trace` (`speed` stages)."""
        return self.stages[0].speed is not None

    @property
    def duration_s(self) -> float:
        """The least total time of the stages, seconds (levels waiting for a request count can take longer)."""
        return sum(stage.min_s for stage in self.stages)

    @property
    def cap_s(self) -> float:
        """The most total time of the stages, seconds (drains excluded)."""
        return sum(stage.cap_s for stage in self.stages)


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


TRACE_ONE_PROCESS = "a trace replay runs in one load process (its rows keep their order): drop --processes/--workers"
"""Why a trace replay refuses several load processes (`vlab.locust.plugin`, `vlab.commands.runner`)."""


class TraceConfig(StrictModel):
    """A request trace replayed at its recorded arrival times (`load.stages[*].speed`): each row's input and output
    lengths, and Mooncake's prefix blocks (`vlab.core.traces`; docs/traces.md)."""

    path: Path
    format: TraceFormat = Field(
        description="`mooncake`: JSONL with timestamp (ms), input_length, output_length, hash_ids; `burstgpt`: CSV "
        "with Timestamp (s), Request tokens, Response tokens."
    )
    block_tokens: int = Field(
        default=MOONCAKE_BLOCK_TOKENS, ge=1, description="mooncake: tokens per hash_ids block (512 in Mooncake's)."
    )

    @model_validator(mode="after")
    def _blocks_for_mooncake(self) -> TraceConfig:
        if self.format != "mooncake" and "block_tokens" in self.model_fields_set:
            raise ValueError("block_tokens applies to format: mooncake only (BurstGPT has no prefix blocks)")
        return self


class RagConfig(StrictModel):
    """Retrieve-then-generate requests (`locustfiles/rag_load.py`): questions answered from retrieved PDF chunks."""

    questions: Path = Field(description='JSONL file, one {"question": ...} per line.')
    corpus: Path | None = Field(
        default=None, description="PDF file or folder ingested at start when the collection is empty or stale."
    )
    db: Path | None = Field(default=None, description="chromadb folder (default .cache/rag).")
    collection: str = "docs"
    k: int = Field(default=4, ge=1, description="Chunks retrieved per question.")


def not_default(model: BaseModel, key: str) -> bool:
    """The field `key` of `model` holds something other than its default (so a scenario read back from run.json,
    where every default is written out, means the same as the file it came from)."""
    default = type(model).model_fields[key].get_default(call_default_factory=True)
    return bool(getattr(model, key) != default)


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
    trace: TraceConfig | None = None
    batch: int = Field(default=1, ge=1, description="embeddings: texts per request, each of prompt_tokens tokens.")
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
        if self.trace is not None:
            clash = [k for k in ("dataset", "rag", "shared_prefix", "prompt_tokens", "output_tokens")
                     if not_default(self, k)]  # fmt: skip
            if clash:
                raise ValueError(
                    f"trace gives every request's lengths and prefixes: not combinable with {', '.join(clash)}"
                )
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

    @model_validator(mode="after")
    def _sections_agree(self) -> Scenario:
        if self.load.replays_trace and self.data.trace is None:
            raise ValueError("load: `speed` stages replay a trace: set data.trace (path and format)")
        if self.data.trace is not None and not self.load.replays_trace:
            raise ValueError("data.trace is replayed by `speed` stages: e.g. load: {speed: 1}")
        if self.data.batch > 1 and self.api.endpoint != "embeddings":
            raise ValueError("data.batch applies to api.endpoint: embeddings only")
        if self.api.endpoint == "embeddings":
            unused = [k for k in ("output_tokens", "ignore_eos") if not_default(self.data, k)]
            if self.data.dataset is not None and self.data.dataset.multi_turn:
                unused.append("dataset.multi_turn")
            if self.data.rag is not None:
                unused.append("rag")
            if unused:
                raise ValueError(f"api.endpoint embeddings generates no text: data.{', data.'.join(unused)} not used")
        return self


# ------------------------------------------------------------------------------------------------------------ loading
_UNION_TAGS = {"fixed", "uniform", "normal", "choice"}


def _key_parts(loc: tuple[Any, ...]) -> list[str | int]:
    """Pydantic's error location without its union-member tags (e.g. 'fixed', 'function-before[...]')."""
    return [p for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in _key_parts(loc):
        text = str(part)
        out += f"[{text}]" if text.isdigit() else (f".{text}" if out else text)
    return out or "(top level)"


def _model_at(parts: list[str | int]) -> type[BaseModel] | None:
    """The model class whose keys live at `parts` (the path of the unknown key's parent), if there is one."""
    import typing

    model: type[BaseModel] = Scenario
    for part in parts:
        if isinstance(part, int) or str(part).isdigit():
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        candidates = [info.annotation, *typing.get_args(info.annotation)]
        for arg in list(candidates):
            candidates += list(typing.get_args(arg))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    parts = _key_parts(loc)
    model = _model_at(parts[:-1])
    if model is None:
        return "unknown key"
    allowed = [*model.model_fields, *getattr(model, "SHORTHAND_KEYS", ())]
    close = difflib.get_close_matches(str(parts[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}allowed: {', '.join(allowed)})"


def parse_scenario(raw: Any, source: str) -> Scenario:
    """Validate an already-parsed scenario mapping; every problem becomes one `ConfigError` line naming `source`,
    the key path and what was expected (unknown keys list the allowed ones)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of scenario keys at the top level")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # An unknown key (a typo) usually causes the other errors: report it first.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = _unknown_key_message(first["loc"])
        raise ConfigError(f"{source}: {_key_path(first['loc'])}: {message}{more}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key.path=value` overrides on a parsed scenario mapping (a copy is returned). The value is read as YAML
    (`8`, `2.5`, `true`, `{dist: uniform, min: 10, max: 20}`); list items are addressed by index
    (`load.stages.0.users=8`). Validation happens afterwards, by the same strict model as the file."""
    import copy

    data = copy.deepcopy(raw)
    load = data.get("load")
    if overrides and isinstance(load, dict) and "stages" not in load:  # shorthand → stages, so that paths are stable
        stage = {k: load.pop(k) for k in LoadConfig.SHORTHAND_KEYS if k in load}
        if stage:
            load["stages"] = [stage]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. data.output_tokens=256")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])}: no such list item")
                node = node[int(part)]
            else:
                if not isinstance(node.get(part, {}), dict | list):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"--set {item!r}: {key}: no such list item")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def read_scenario_file(path: Path) -> dict[str, Any]:
    """The scenario file's YAML mapping; unreadable files and YAML syntax errors are one `ConfigError` line."""
    raw = read_yaml(path, "scenario file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of scenario keys at the top level")
    return raw


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read and validate a scenario file (with `--set` style overrides applied first); every problem becomes one
    `ConfigError` line. Files the scenario names (datasets, RAG questions) are resolved and must exist."""
    path = Path(path)
    raw = apply_overrides(read_scenario_file(path), overrides)
    return resolve_files(parse_scenario(raw, str(path)), path)


def resolve_files(scenario: Scenario, path: Path) -> Scenario:
    """The scenario with the files it names (datasets, RAG questions and corpus, a trace) resolved against its file's
    folder, else the repository; a missing file is one `ConfigError` line. A trace is read here (a bad row is one
    line too) and its levels' rates derived (`_trace_stages`)."""
    data = scenario.data
    if data.dataset is not None:
        dataset = data.dataset.model_copy(update={"path": _existing(path, data.dataset.path, "data.dataset.path")})
        data = data.model_copy(update={"dataset": dataset})
    if data.rag is not None:
        update = {"questions": _existing(path, data.rag.questions, "data.rag.questions")}
        if data.rag.corpus is not None:
            update["corpus"] = _existing(path, data.rag.corpus, "data.rag.corpus")
        data = data.model_copy(update={"rag": data.rag.model_copy(update=update)})
    load = scenario.load
    if data.trace is not None:
        trace = data.trace.model_copy(update={"path": _existing(path, data.trace.path, "data.trace.path")})
        data = data.model_copy(update={"trace": trace})
        load = _trace_stages(load, trace, path)
    return scenario.model_copy(update={"data": data, "load": load})


def _trace_stages(load: LoadConfig, trace: TraceConfig, path: Path) -> LoadConfig:
    """The trace read (a bad row is one `ConfigError` line) and each `speed` stage's `requests` (rows replayed) and
    `rate` (their mean arrival rate at that speed) filled in (see `Stage`)."""
    loaded = load_trace(trace.path, trace.format, trace.block_tokens)
    stages = []
    for i, stage in enumerate(load.stages):
        assert stage.speed is not None
        if stage.requests is not None and stage.requests > len(loaded.rows):
            raise ConfigError(f"{path}: load.stages[{i}].requests: {stage.requests}, but the trace has "
                              f"{len(loaded.rows)} usable rows")  # fmt: skip
        n = loaded.count(stage.requests)
        if n < 2 or loaded.span_s(n) <= 0:
            raise ConfigError(f"{path}: load.stages[{i}]: the first {n} trace rows arrive at one instant: no schedule")
        rate = loaded.mean_rate(n, stage.speed)
        if stage.rate is not None and not math.isclose(stage.rate, rate, rel_tol=1e-6):
            raise ConfigError(
                f"{path}: load.stages[{i}].rate: {stage.rate:g}, but a trace level's rate is derived from the trace "
                f"({rate:g} req/s at speed {stage.speed:g}): leave it out"
            )
        stages.append(stage.model_copy(update={"rate": rate, "requests": n}))
    return load.model_copy(update={"stages": stages})


def expand_env(value: str, where: str) -> str:
    """`${VAR}` → the environment variable VAR (a header value); an unset variable is one `ConfigError` line."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)


def _existing(scenario_path: Path, value: Path, key: str) -> Path:
    """A file named in a scenario: relative to the scenario's folder, else to the repository; it must exist."""
    from vlab.core.paths import REPO_ROOT

    candidates = [value] if value.is_absolute() else [scenario_path.parent / value, REPO_ROOT / value]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(f"{scenario_path}: {key}: file not found: {value}")
