"""A lab plan: which server profiles and which workloads `vlab lab` runs, one strict YAML file per kind of machine
(`scenarios/lab/cpu.yaml`, `scenarios/lab/gpu.yaml`).

Each section sizes one experiment (`vlab.commands.lab` turns it into scenarios):

- `load`: closed loop at each of `users` (load vs latency: the knee and the highest level meeting the SLO);
- `prefill`: 1 user, prompts of each of `lengths` tokens and `output_tokens` (TTFT against prompt length);
- `decode`: short prompts, long outputs, at each of `batches` users (ITL against the decode batch);
- `prefix`: a `shared_tokens` prefix before `unique_tokens` own tokens, on the base profile and the one without
  prefix caching;
- `kv`: the same load on the base profile and the KV-budget profile (e.g. a 6 GB card's), plus the original lab's own
  test: `identical_users` identical prompts at once with a fixed output length;
- `ladder`: the same load on each profile of `profiles.ladder` (the model-size ladder);
- `crosscheck`: `vllm bench serve --max-concurrency C` against a suite level of C users, same workload.

A level's request count is max(`requests_min`, `requests_per_user` × users) (≥ 30 measured once the start-up
transient is cut), its shortest time `min_s` and its cap `cap_s`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlab.core.errors import ConfigError
from vlab.core.paths import SCENARIOS_DIR
from vlab.core.yamlfile import read_yaml

LAB_PLANS_DIR = SCENARIOS_DIR / "lab"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sizing(_Strict):
    """How long each level of an experiment runs."""

    requests_min: int = Field(default=40, ge=1, description="Requests a level needs at the least.")
    requests_per_user: float = Field(default=2.0, ge=0, description="… or this many per user, when more.")
    min_s: float = Field(default=5.0, gt=0, description="Shortest level, seconds.")
    cap_s: float = Field(default=180.0, gt=0, description="Longest level, seconds.")

    def requests(self, users: int) -> int:
        return max(self.requests_min, round(self.requests_per_user * users))


class LoadSection(Sizing):
    users: list[int] = Field(min_length=1)
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    slo: dict[str, float] = Field(default_factory=dict, description="As a scenario's `slo` (ms).")


class PrefillSection(_Strict):
    lengths: list[int] = Field(min_length=1, description="Prompt lengths, tokens.")
    per_length: int = Field(default=6, ge=1, description="Requests per length.")
    output_tokens: int = Field(default=1, ge=1)


class DecodeSection(Sizing):
    batches: list[int] = Field(min_length=1, description="Users, i.e. requests decoding at once.")
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)


class PrefixSection(Sizing):
    users: list[int] = Field(min_length=1)
    shared_tokens: int = Field(gt=0)
    unique_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)


class KvSection(Sizing):
    users: list[int] = Field(min_length=1)
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    identical_users: int = Field(default=4, ge=1, description="The original lab's test: identical prompts at once.")
    identical_output_tokens: int = Field(default=256, ge=1)


class LadderSection(Sizing):
    users: list[int] = Field(min_length=1)
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)


class CrosscheckSection(_Strict):
    concurrency: list[int] = Field(min_length=1)
    prompts_per_user: int = Field(default=4, ge=1, description="vllm bench prompts (and suite requests) per user.")
    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)


class LabProfiles(_Strict):
    base: str = Field(description="The profile most experiments run on (vlab lab --profile overrides it).")
    noprefix: str | None = Field(default=None, description="The base without prefix caching.")
    kv_budget: str | None = Field(default=None, description="The base with a smaller KV cache (e.g. a 6 GB card's).")
    ladder: list[str] = Field(default_factory=list, description="The model-size ladder, smallest first.")


class Assumptions(_Strict):
    """Rough speeds for the dry run's time estimate (never used for measurements)."""

    start_s: float = Field(default=60.0, description="Server start to healthy, seconds.")
    itl_ms: float = Field(default=20.0, description="Time per output token at moderate load, ms.")
    prefill_tok_s: float = Field(default=5000.0, description="Prompt tokens prefilled per second.")
    run_overhead_s: float = Field(default=8.0, description="Locust start, calibration and report per run, seconds.")


class LabPlan(_Strict):
    """See the module docstring."""

    name: str
    description: str = ""
    profiles: LabProfiles
    co_host: bool = Field(default=False, description="Start every server of the lab at once (one GPU, many servers).")
    processes: int = Field(default=0, ge=0, description="Locust worker processes for the suite's runs.")
    metrics_interval_s: float = Field(default=0.5, ge=0)
    load: LoadSection
    prefill: PrefillSection
    decode: DecodeSection
    prefix: PrefixSection
    kv: KvSection
    ladder: LadderSection
    crosscheck: CrosscheckSection
    assume: Assumptions = Field(default_factory=Assumptions)


def load_lab_plan(name_or_path: str | Path) -> LabPlan:
    """A plan by name (scenarios/lab/<name>.yaml) or path; every problem is one `ConfigError` line."""
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) or "/" in text else LAB_PLANS_DIR / f"{text}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in LAB_PLANS_DIR.glob("*.yaml")))
        raise ConfigError(f"{path}: lab plan not found (known: {known})")
    raw: Any = read_yaml(path, "lab plan")
    try:
        return LabPlan.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
