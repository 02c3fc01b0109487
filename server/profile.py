"""Server profiles: one YAML file per way of running vLLM, validated strictly, turned into an argv list and env.

Profiles live in `server/profiles/<name>.yaml`. `load_profile` validates one; `build_command` turns it into the exact
argument list and the environment variables that start vLLM's OpenAI-compatible server (never a shell string).

GPU memory (device cuda). `kv_cache_memory_bytes: N` makes vLLM allocate exactly N bytes of KV cache
(`--kv-cache-memory-bytes`); vLLM 0.26.0 then skips its memory profiling and only checks at start that the free GPU
memory is at least `gpu_memory_utilization` × total, which is how several servers share one GPU (each with a small
utilization such as 0.05 and its own N). `kv_budget: {card: "RTX 4050 Laptop", utilization: 0.9}` instead derives N
as vLLM would on that card (`vlab.core.physical_limit.derive_kv_budget`): ⌈utilization × card memory⌉ − weights (from
the model's config.json) − activation − non-torch − CUDA graphs (vLLM 0.26.0's measurements on the H200 unless given).
The two are exclusive. The model's config.json is the model folder's, or, when the folder is not on this machine,
`config_json` (a path relative to the repo root); with both present they must describe the same shape.

`dummy_weights: true` adds `--load-format dummy` (random weights: the same kernels, memory and speed, nonsense text);
it is a field, not an extra argument, so that run reports can say so.

Engines. `engine: vllm` (the default) starts vLLM's OpenAI server. `engine: transformers` starts `transformers serve`
(Transformers 5.19, the server venv's) pinned to the model, on CPU, with `HF_HUB_OFFLINE=1`; `continuous_batching:
true` adds `--continuous-batching` (paged attention; its KV cache set by `cb_block_size` × `cb_num_blocks` tokens and
its step size by `cb_max_batch_tokens`: without them Transformers sizes the cache from free memory, which on this
machine took 19 GB and the OOM killer). `transformers serve` serves and lists models of a Hugging Face hub cache only,
so the launcher lays the local model folder out as one (`server.hub_cache`: symlinks, no copy) under the id
`served_model_name`, and points `HF_HUB_CACHE` there. vLLM-only keys (KV cache size, prefix caching, eager mode,
scheduler limits, GPU memory) are refused on a Transformers profile rather than silently ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlab.core.errors import ConfigError
from vlab.core.hardware import card_for, card_keys
from vlab.core.model_shape import ModelShape
from vlab.core.paths import CACHE_DIR, MODELS_DIR, REPO_ROOT, SERVER_PYTHON, SERVER_VENV
from vlab.core.physical_limit import KvBudget, derive_kv_budget, gib
from vlab.core.yamlfile import read_yaml

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
TRANSFORMERS_MODULE = "transformers.cli.transformers"
HUB_CACHE_DIR = CACHE_DIR / "hf-hub"
"""The hub-cache view of the local model folders that `transformers serve` reads (see `server.hub_cache`)."""
VLLM_ONLY_KEYS = (
    "kv_cache_gib", "kv_cache_blocks", "gpu_memory_utilization", "kv_cache_memory_bytes", "kv_budget",
    "dummy_weights", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching", "enforce_eager",
)  # fmt: skip
CB_KEYS = ("cb_block_size", "cb_num_blocks", "cb_max_batch_tokens")
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
PREPARE_HINT = "scripts/prepare-model.sh"


CUDA_ENV: dict[str, str] = {
    # NVLink multicast off: harmless for one GPU, and required on the project's shared GPU hosts
    # (shared/gpu-offline/README.md). Profiles' `env` can override.
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "VLLM_NO_USAGE_STATS": "1",
}


class KvBudgetSpec(BaseModel):
    """Derive kv_cache_memory_bytes as vLLM would leave it on `card` at `utilization` (see the module doc)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    card: str = Field(min_length=1, description="A card of vlab/core/hardware.py, by short or NVML name.")
    utilization: float = Field(default=0.9, gt=0, le=1, description="That card's gpu_memory_utilization (vLLM: 0.9).")
    peak_activation_gib: float | None = Field(default=None, ge=0, description="Default: measured on the H200.")
    non_torch_gib: float | None = Field(default=None, ge=0, description="Default: measured on the H200.")
    cudagraph_gib: float | None = Field(default=None, ge=0, description="Default: measured on the H200.")

    @model_validator(mode="after")
    def _known_card(self) -> KvBudgetSpec:
        if card_for(self.card) is None:
            raise ValueError(f"unknown card {self.card!r} (known: {', '.join(card_keys())})")
        return self


class ServerProfile(BaseModel):
    """How to start one vLLM server: model, precision, memory and flags."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Profile name, as passed to --profile.")
    engine: Literal["vllm", "transformers"] = Field(
        default="vllm", description="Which server: vLLM's OpenAI server, or `transformers serve`."
    )
    description: str = Field(default="", description="One line on what the profile is for.")
    model: str = Field(
        min_length=1,
        description="Local model folder or Hugging Face id. `{models_dir}` expands to .cache/models; relative paths "
        "are relative to the repo root.",
    )
    served_model_name: str = Field(min_length=1, description="Model name the API exposes (the `model` field).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(default="auto", description="Weight dtype.")
    max_model_len: int = Field(gt=0, description="Maximum prompt + output length, tokens.")
    kv_cache_gib: int | None = Field(
        default=None,
        ge=1,
        description="CPU only: KV cache size in GiB (whole GiB: vLLM parses VLLM_CPU_KVCACHE_SPACE as an integer).",
    )
    kv_cache_blocks: int | None = Field(
        default=None,
        gt=0,
        description="Caps the KV cache at this many blocks (`--num-gpu-blocks-override`; 128 tokens each on CPU). "
        "For caches smaller than 1 GiB.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="CUDA only: fraction of GPU memory vLLM may use (weights + KV cache)."
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None, gt=0, description="CUDA only: exact KV-cache size in bytes (--kv-cache-memory-bytes)."
    )
    kv_budget: KvBudgetSpec | None = Field(
        default=None, description="CUDA only: derive kv_cache_memory_bytes for a card (exclusive with it)."
    )
    config_json: str | None = Field(
        default=None,
        description="The model's config.json (path relative to the repo root) when the model folder is not here.",
    )
    dummy_weights: bool = Field(default=False, description="true adds --load-format dummy (random weights).")
    max_num_seqs: int | None = Field(default=None, gt=0, description="--max-num-seqs: most sequences per step.")
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, description="--max-num-batched-tokens: most tokens per step (chunked prefill)."
    )
    enable_prefix_caching: bool = Field(default=True, description="false adds --no-enable-prefix-caching.")
    enforce_eager: bool = Field(default=False, description="true skips torch.compile/graphs: faster start, slower run.")
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="--tensor-parallel-size: GPUs each layer is split across (cuda only; the KV budget keys are then "
        "per GPU, as vLLM applies them).",
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Which vLLM build the profile is for.")
    continuous_batching: bool = Field(
        default=False, description="Transformers only: --continuous-batching (paged attention, one shared batch)."
    )
    cb_block_size: int | None = Field(default=None, gt=0, description="Transformers CB: KV block size, tokens.")
    cb_num_blocks: int | None = Field(default=None, gt=0, description="Transformers CB: KV cache blocks.")
    cb_max_batch_tokens: int | None = Field(default=None, gt=0, description="Transformers CB: most tokens per step.")
    extra_args: list[str] = Field(default_factory=list, description="More server arguments, appended verbatim.")
    env: dict[str, str] = Field(default_factory=dict, description="More environment variables (override defaults).")

    @model_validator(mode="after")
    def _check_engine_fields(self) -> ServerProfile:
        if self.engine == "transformers":
            given = [key for key in VLLM_ONLY_KEYS if key in self.model_fields_set]
            if given:
                raise ValueError(f"{given[0]} applies to engine 'vllm' only (this profile is engine 'transformers')")
            if self.device != "cpu":
                raise ValueError("engine 'transformers' profiles are CPU only here (device: cpu)")
            if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", self.served_model_name):
                raise ValueError("served_model_name must look like a hub id (`name` or `org/name`) for transformers")
            if self.local_model_path() is None:
                raise ValueError("engine 'transformers' needs a local model folder (no hub access at run time)")
        elif self.continuous_batching or any(getattr(self, key) is not None for key in CB_KEYS):
            raise ValueError("continuous_batching and cb_* apply to engine 'transformers' only")
        if not self.continuous_batching and any(getattr(self, key) is not None for key in CB_KEYS):
            raise ValueError("cb_* keys need continuous_batching: true")
        return self

    @model_validator(mode="after")
    def _check_device_fields(self) -> ServerProfile:
        if self.device == "cuda" and self.kv_cache_gib is not None:
            raise ValueError("kv_cache_gib applies to device 'cpu' only; use kv_cache_memory_bytes for cuda")
        for key in ("gpu_memory_utilization", "kv_cache_memory_bytes", "kv_budget"):
            if self.device == "cpu" and getattr(self, key) is not None:
                raise ValueError(f"{key} applies to device 'cuda' only; use kv_cache_gib for cpu")
        if self.kv_budget is not None and self.kv_cache_memory_bytes is not None:
            raise ValueError("kv_budget derives kv_cache_memory_bytes: give one of the two, not both")
        if self.tensor_parallel_size > 1 and self.device != "cuda":
            raise ValueError("tensor_parallel_size > 1 needs device 'cuda' (several GPUs)")
        if "--load-format" in self.extra_args or any(a.startswith("--load-format=") for a in self.extra_args):
            raise ValueError("--load-format in extra_args: use dummy_weights: true (the report then says so)")
        for flag in ("--kv-cache-memory-bytes", "--max-num-seqs", "--max-num-batched-tokens", "--tensor-parallel-size"):
            if flag in self.extra_args:
                raise ValueError(f"{flag} in extra_args: use the profile key {flag[2:].replace('-', '_')}")
        return self

    def resolved_model(self) -> str:
        """The model argument for vLLM: the placeholder expanded, local paths made absolute."""
        local = self.local_model_path()
        return str(local) if local is not None else self.model

    def local_model_path(self) -> Path | None:
        """The model folder if `model` names a local path, or None for a Hugging Face id such as `org/name`."""
        text = self.model.replace("{models_dir}", str(MODELS_DIR))
        if text != self.model or text.startswith(("/", "./", "../", "~")):
            path = Path(text).expanduser()
            return path if path.is_absolute() else (REPO_ROOT / path).resolve()
        return None

    def config_json_path(self) -> Path | None:
        """`config_json` as an absolute path (relative paths are relative to the repo root), or None."""
        if self.config_json is None:
            return None
        path = Path(self.config_json).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    def config_path(self) -> Path | None:
        """The model's config.json: the local model folder's if it is there, else `config_json`, else None."""
        local = self.local_model_path()
        if local is not None and (local / "config.json").is_file():
            return local / "config.json"
        return self.config_json_path()

    def model_shape(self) -> ModelShape | None:
        """The model's shape from `config_path()`, or None when no config.json is known. Raises ConfigError if the
        file named is missing or not a dense Llama/Qwen2-style config."""
        path = self.config_path()
        return ModelShape.from_config_file(path) if path is not None else None

    def served_dtype(self, shape: ModelShape | None = None) -> str:
        """The dtype vLLM runs with: the profile's, or for 'auto' the checkpoint's (needs the shape)."""
        if self.dtype != "auto":
            return self.dtype
        return shape.resolve_dtype("auto") if shape is not None else "auto"


def kv_budget_for(profile: ServerProfile, shape: ModelShape | None = None) -> KvBudget | None:
    """The derivation of `profile.kv_budget` (None without one). Raises ConfigError when the model's config.json is
    unknown or the card cannot hold the weights."""
    spec = profile.kv_budget
    if spec is None:
        return None
    shape = shape or profile.model_shape()
    if shape is None:
        raise ConfigError(
            f"profile {profile.name}: kv_budget needs the model's config.json; the model folder "
            f"{profile.local_model_path() or profile.model} is not here, so set config_json"
        )
    card = card_for(spec.card)
    assert card is not None  # checked by KvBudgetSpec
    given = {
        "peak_activation": spec.peak_activation_gib,
        "non_torch": spec.non_torch_gib,
        "cudagraph": spec.cudagraph_gib,
    }
    try:
        return derive_kv_budget(
            shape,
            card,
            spec.utilization,
            profile.served_dtype(shape),
            **{k: (gib(v) if v is not None else None) for k, v in given.items()},  # type: ignore[arg-type]
        )
    except ConfigError as exc:
        raise ConfigError(f"profile {profile.name}: kv_budget for {card.key}: {exc}") from None


def resolve_kv_cache_memory_bytes(profile: ServerProfile, shape: ModelShape | None = None) -> int | None:
    """The --kv-cache-memory-bytes value: the profile's, or the kv_budget's derivation, or None."""
    if profile.kv_cache_memory_bytes is not None:
        return profile.kv_cache_memory_bytes
    budget = kv_budget_for(profile, shape)
    return budget.kv_bytes if budget is not None else None


def check_memory(profile: ServerProfile) -> None:
    """Where the model's shape is known: the KV cache must hold one request of max_model_len tokens (vLLM refuses to
    start otherwise). Raises ConfigError (one line)."""
    if profile.kv_cache_memory_bytes is None and profile.kv_budget is None:
        return
    shape = profile.model_shape()
    if shape is None:
        if profile.kv_budget is not None:
            kv_budget_for(profile)  # raises the clear "needs config.json" line
        return
    kv_bytes = resolve_kv_cache_memory_bytes(profile, shape)
    assert kv_bytes is not None
    per_token = shape.kv_bytes_per_token(profile.served_dtype(shape))
    tokens = kv_bytes // per_token
    if tokens < profile.max_model_len:
        raise ConfigError(
            f"profile {profile.name}: a KV cache of {kv_bytes / (1 << 30):.2f} GiB holds {tokens:,} tokens of this "
            f"model ({per_token / 1024:g} KiB/token), fewer than max_model_len {profile.max_model_len:,}"
        )


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _profile_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"profile file {path} not found")
        return path
    path = PROFILES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {text!r} (available: {', '.join(list_profiles())})")
    return path


def _describe_error(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        fields = KvBudgetSpec.model_fields if error["loc"][:1] == ("kv_budget",) else ServerProfile.model_fields
        return f"key {key!r}: unknown key (expected one of: {', '.join(fields)})"
    return f"key {key!r}: {error['msg']} (got {error.get('input')!r})"


def parse_profile(data: Any, source: str) -> ServerProfile:
    """Validate already-parsed YAML `data`; errors name `source`, the key path and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of profile keys, got {type(data).__name__}")
    try:
        return ServerProfile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe_error(dict(errors[0]))}{more}") from None


def load_profile(name_or_path: str | Path) -> ServerProfile:
    """Load a profile by name (from server/profiles/) or by path to a YAML file.

    Raises ConfigError (one line: file, key path, what was expected) for missing files, bad YAML or invalid keys.
    """
    path = _profile_path(name_or_path)
    try:
        source = str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        source = str(path)
    data = read_yaml(path, "server profile", shown=source)
    profile = parse_profile(data, source)
    try:
        check_memory(profile)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return profile


def _cpu_list() -> str:
    """The CPUs this process may run on, as an OMP bind list such as `0-1` or `0,2,5`."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(str(c) for c in cpus)


def _find_libiomp5() -> Path | None:
    """The Intel OpenMP runtime shipped in the server venv (vllm-cpu's dependency), if any."""
    direct = SERVER_VENV / "lib" / "libiomp5.so"
    if direct.is_file():
        return direct
    return next(iter(sorted(SERVER_VENV.glob("lib/python3*/site-packages/**/libiomp5.so"))), None)


def cpu_env(profile: ServerProfile) -> dict[str, str]:
    """Environment variables for vLLM's CPU backend: KV cache size, thread binding to every core, fast allocators."""
    env = {
        "VLLM_TARGET_DEVICE": "cpu",  # do not rely on platform detection from the package's version string
        "VLLM_CPU_OMP_THREADS_BIND": _cpu_list(),  # default binds compute to one core; all cores ≈ 1.5x throughput
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    if profile.kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.kv_cache_gib)
    preload = [str(p) for p in (TCMALLOC if TCMALLOC.is_file() else None, _find_libiomp5()) if p is not None]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def build_command(profile: ServerProfile, port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv list and the environment variables (to set on top of the caller's) that start `profile`.

    `port` overrides the profile's port. The server runs with the server venv's python as
    `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of vllm-cpu is broken), or for engine
    transformers as `python -m transformers.cli.transformers serve` (`transformers_command`). Raises ConfigError
    when a kv_budget cannot be derived (no config.json, or the card cannot hold the weights).
    """
    if profile.engine == "transformers":
        return transformers_command(profile, port)
    argv = [
        str(SERVER_PYTHON), "-m", SERVER_MODULE,
        "--model", profile.resolved_model(),
        "--served-model-name", profile.served_model_name,
        "--dtype", profile.dtype,
        "--max-model-len", str(profile.max_model_len),
        "--host", profile.host,
        "--port", str(port if port is not None else profile.port),
    ]  # fmt: skip
    argv.append("--enable-prefix-caching" if profile.enable_prefix_caching else "--no-enable-prefix-caching")
    if profile.enforce_eager:
        argv.append("--enforce-eager")
    if profile.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
    kv_bytes = resolve_kv_cache_memory_bytes(profile)
    if kv_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    if profile.kv_cache_blocks is not None:
        argv += ["--num-gpu-blocks-override", str(profile.kv_cache_blocks)]
    if profile.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(profile.max_num_seqs)]
    if profile.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(profile.max_num_batched_tokens)]
    if profile.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(profile.tensor_parallel_size)]
    if profile.dummy_weights:
        argv += ["--load-format", "dummy"]
    argv += profile.extra_args

    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(CACHE_DIR / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(CACHE_DIR / "torchinductor"),
    }
    if profile.device == "cpu":
        env.update(cpu_env(profile))
    else:
        env.update(CUDA_ENV)
    env.update(profile.env)
    return argv, env


def transformers_command(profile: ServerProfile, port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of `transformers serve` pinned to `served_model_name`, read from `HUB_CACHE_DIR`.

    OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads otherwise spin while waiting, and on two shared cores beside
    a vLLM server that made one generated token take ~1 s instead of ~0.1 s (measured with `generate()` alone).
    """
    argv = [
        str(SERVER_PYTHON), "-m", TRANSFORMERS_MODULE, "serve", profile.served_model_name,
        "--host", profile.host,
        "--port", str(port if port is not None else profile.port),
        "--device", profile.device,
        "--dtype", profile.dtype,
        "--log-level", "info",
    ]  # fmt: skip
    if profile.continuous_batching:
        argv.append("--continuous-batching")
        for key in CB_KEYS:
            value = getattr(profile, key)
            if value is not None:
                argv += [f"--{key.replace('_', '-')}", str(value)]
    argv += profile.extra_args
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(HUB_CACHE_DIR),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }
    env.update(profile.env)
    return argv, env
