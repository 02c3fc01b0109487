"""The `server.json` facts of a profile (`vlab.core.server_facts.ServerFacts`), for the run folders it serves.

facts = facts_for(load_profile("h200-qwen2-1.5b"), gpu_name="NVIDIA H200", vllm_version="0.26.0")
write_server_facts(run_dir, facts)
"""

from __future__ import annotations

from server.profile import ServerProfile, kv_budget_for, resolve_kv_cache_memory_bytes
from vlab.core.errors import ConfigError
from vlab.core.model_shape import ModelShape
from vlab.core.server_facts import ServerFacts


def facts_for(profile: ServerProfile, gpu_name: str | None = None, vllm_version: str | None = None) -> ServerFacts:
    """What a report needs to know about a server started from `profile`. The model shape comes from the model's
    config.json when one is known (`ServerProfile.config_path`), else it is None; never raises for a missing one."""
    try:
        shape: ModelShape | None = profile.model_shape()
    except ConfigError:
        shape = None
    try:
        kv_bytes = resolve_kv_cache_memory_bytes(profile, shape)
        budget = kv_budget_for(profile, shape)
    except ConfigError:  # a kv_budget without a known config.json: the report shows no derivation
        kv_bytes, budget = profile.kv_cache_memory_bytes, None
    per_token = shape.kv_bytes_per_token(profile.served_dtype(shape)) if shape is not None else None
    return ServerFacts(
        profile=profile.name,
        model=profile.resolved_model(),
        served_model_name=profile.served_model_name,
        dtype=profile.served_dtype(shape),
        device=profile.device,
        dummy_weights=profile.dummy_weights,
        max_model_len=profile.max_model_len,
        kv_cache_memory_bytes=kv_bytes,
        kv_budget=budget.lines(per_token) if budget is not None else None,
        gpu_memory_utilization=profile.gpu_memory_utilization,
        max_num_seqs=profile.max_num_seqs,
        max_num_batched_tokens=profile.max_num_batched_tokens,
        enable_prefix_caching=profile.enable_prefix_caching,
        model_shape=shape,
        gpu_name=gpu_name,
        vllm_version=vllm_version,
    )
