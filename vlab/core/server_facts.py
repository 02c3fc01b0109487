"""`server.json` in a run folder: what the server of the run was, as far as the report needs it.

Written by whoever started the server from a profile (`server.facts.facts_for(profile)`, then
`write_server_facts(run_dir, facts)`); read by the report (`read_server_facts(run_dir)`), which uses the model shape
for the physical limit and says plainly when the weights were random (`dummy_weights`). A run against a server the
suite did not start has no `server.json`; the report then says that the physical limit needs one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlab.core.model_shape import ModelShape

SERVER_JSON = "server.json"
FORMAT = 1


class ServerFacts(BaseModel):
    """The server of one run. Sizes in bytes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: int = FORMAT
    profile: str = Field(description="Profile name (server/profiles/<name>.yaml), or the YAML path given.")
    model: str = Field(description="The --model argument: a local folder or a Hugging Face id.")
    served_model_name: str
    dtype: str = Field(description="The dtype the server ran with (the profile's, 'auto' resolved from config.json).")
    device: str = "cuda"
    dummy_weights: bool = Field(description="True: --load-format dummy, random weights; speed is real, text is not.")
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = Field(default=None, description="The KV cache vLLM was told to allocate.")
    kv_budget: list[str] | None = Field(default=None, description="The KV budget's derivation, when derived.")
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool | None = None
    model_shape: ModelShape | None = Field(default=None, description="From the model's config.json, if known.")
    gpu_name: str | None = Field(default=None, description="NVML name of the GPU it ran on, e.g. 'NVIDIA H200'.")
    vllm_version: str | None = None


def write_server_facts(run_dir: Path | str, facts: ServerFacts) -> Path:
    """Write RUN_DIR/server.json atomically; returns its path."""
    path = Path(run_dir) / SERVER_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(facts.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_server_facts(run_dir: Path | str) -> tuple[ServerFacts | None, str]:
    """(facts, "") from RUN_DIR/server.json, or (None, one-line reason) when it is missing or invalid. Never raises."""
    path = Path(run_dir) / SERVER_JSON
    if not path.is_file():
        return None, f"no {SERVER_JSON} in the run folder (the server was not started from a profile by the suite)"
    try:
        return ServerFacts.model_validate(json.loads(path.read_text(encoding="utf-8"))), ""
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"{SERVER_JSON} unreadable: {first}"
