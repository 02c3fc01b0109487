"""Floors, ratios and the KV budget against hand computations (arithmetic on literals, commented)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from server.profile import load_profile, resolve_kv_cache_memory_bytes
from vlab.core.errors import ConfigError
from vlab.core.hardware import GIB, card_for
from vlab.core.model_shape import ModelShape
from vlab.core.physical_limit import (
    H200_QWEN2_1P5B_FP16,
    CohostPlan,
    decode_floor,
    derive_kv_budget,
    gib,
    kv_budget,
    kv_budget_bytes,
    prefill_floor,
    ratio,
    server_footprint,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]
QWEN15 = ModelShape.from_config_file(ROOT / "tests" / "fixtures" / "models" / "qwen2-1.5b")
QWEN7 = ModelShape.from_config_file(ROOT / "server" / "model_configs" / "qwen2-7b.json")
H200 = card_for("NVIDIA H200")
RTX4050 = card_for("NVIDIA GeForce RTX 4050 Laptop GPU")
MATMUL_BYTES_15 = (1_543_714_304 - 1536 * 57) * 2  # parameters less the 57 norm vectors, fp16: 3,087,253,504 B
KV_15 = 28_672  # 2 x 28 layers x 2 KV heads x 128 x 2 bytes


def test_decode_floor_qwen2_1p5b_h200_one_user() -> None:
    f = decode_floor(QWEN15, H200, batch=1, mean_context=640, dtype="float16")
    moved = MATMUL_BYTES_15 + 1 * 640 * KV_15  # 3,087,253,504 + 18,350,080 B
    assert f.bytes_moved == moved
    assert f.memory_s == pytest.approx(moved / 4.8e12)  # 0.647 ms
    assert f.compute_s == pytest.approx(1 * 2 * MATMUL_BYTES_15 / 2 / 989.5e12)  # 3.1 µs
    assert f.bound == "memory" and f.floor_s == pytest.approx(0.000647, rel=1e-3)


def test_decode_floor_qwen2_1p5b_h200_512_users() -> None:
    f = decode_floor(QWEN15, H200, batch=512, mean_context=640, dtype="float16")
    # 3,087,253,504 B of weights + 512 x 640 x 28,672 = 9,395,240,960 B of KV, at 4.8 TB/s
    assert f.memory_s == pytest.approx((3_087_253_504 + 9_395_240_960) / 4.8e12)  # 2.6005 ms
    # 512 sequences x 2 x 1,543,626,752 FLOP at 989.5 TFLOP/s
    assert f.compute_s == pytest.approx(512 * 2 * 1_543_626_752 / 989.5e12)  # 1.597 ms
    assert f.bound == "memory" and f.floor_s * 1000 == pytest.approx(2.6005, abs=1e-4)


def test_decode_floor_7b_untied_reads_no_input_embedding() -> None:
    f = decode_floor(QWEN7, card_for("NVIDIA H100 80GB HBM3"), batch=1, mean_context=640, dtype="float16")
    weights = (7_615_616_512 - 152064 * 3584 - 3584 * 57) * 2  # less the input embedding and the norms
    assert f.memory_s == pytest.approx((weights + 640 * 57_344) / 3.35e12)  # 4.232 ms
    assert f.floor_s * 1000 == pytest.approx(4.232, abs=1e-3)


def test_prefill_floor() -> None:
    f = prefill_floor(QWEN15, H200, 512, "float16")
    assert f.compute_s == pytest.approx(512 * 2 * 1_543_626_752 / 989.5e12)  # 1.597 ms
    assert f.memory_s == pytest.approx((3_087_253_504 + 512 * 28_672) / 4.8e12)  # 0.646 ms
    assert f.bound == "compute"
    laptop = prefill_floor(QWEN15, RTX4050, 512, "float16")
    assert laptop.floor_s * 1000 == pytest.approx(512 * 2 * 1_543_626_752 / 24.3e12 * 1000)  # 65.05 ms
    one = decode_floor(QWEN15, RTX4050, 1, 640, "float16")
    assert one.floor_s * 1000 == pytest.approx((3_087_253_504 + 640 * 28_672) / 192e9 * 1000)  # 16.18 ms


def test_floor_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        decode_floor(QWEN15, H200, 0, 100)
    with pytest.raises(ValueError):
        prefill_floor(QWEN15, H200, 0)


def test_ratio_and_verdicts() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(3.0, math.nan)) and math.isnan(ratio(3.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))
    assert "hardware is the limit" in verdict(1.5)
    assert "engine or the scheduler is the limit" in verdict(5.0)
    assert "both" in verdict(2.0)
    assert "prefix-cache" in verdict(0.5, prefill=True)
    assert "below the floor" in verdict(0.5)
    assert "no floor" in verdict(math.nan)


def test_6gb_budget_by_hand() -> None:
    b = derive_kv_budget(QWEN15, RTX4050, 0.9, "float16")
    requested = math.ceil(0.9 * 6 * 1024**3)  # 5,798,205,850 B (vLLM rounds up)
    weights = 3_087_428_608  # 1,543,714,304 parameters x 2 bytes
    activation, non_torch, graphs = int(0.57 * 1024**3), int(0.22 * 1024**3), int(0.50 * 1024**3)
    expected = requested - weights - activation - non_torch - graphs
    assert b.requested_bytes == requested
    assert b.kv_bytes == expected == 1_325_650_290  # 1.235 GiB
    assert b.blocks(KV_15) == expected // (16 * 28_672) == 2_889
    assert b.tokens(KV_15) == 2_889 * 16 == 46_224
    assert b.requests(KV_15, 512 + 256) == 2_889 // 48 == 60  # 768 tokens = 48 blocks of 16
    text = "\n".join(b.lines(KV_15, 768))
    for needle in ("5.400 GiB", "2.875 GiB", "0.570 GiB", "0.220 GiB", "0.500 GiB", "1.235 GiB", "46,224", "60 "):
        assert needle in text
    assert "max_num_batched_tokens 8192" in text and "conservative" in text


def test_budget_function_and_the_cannot_hold_error() -> None:
    assert kv_budget_bytes(100, 0.5, 10, 5, 5, 5) == 50 - 25
    with pytest.raises(ConfigError, match="cannot hold the weights") as info:
        kv_budget(6 * GIB, 0.5, 3_087_428_608, gib(0.57), gib(0.22), gib(0.5))  # 3 GiB < 4.17 GiB
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot hold"):
        derive_kv_budget(QWEN7, RTX4050, 0.9, "float16")  # 15.2 GB of weights on a 6 GB card
    with pytest.raises(ConfigError, match="fraction"):
        kv_budget(6 * GIB, 1.5, 1, 1, 1, 1)


def test_h200_profiles_fit_together() -> None:
    """The co-hosting plan of docs/gpu.md: the six H200 profiles at once in vLLM's 139.8 GiB, 5 GiB to spare."""
    servers = []
    for name, scale in (
        ("h200-qwen2-1.5b", 1.0),
        ("h200-qwen2-7b", 18944 / 8960),  # activation scaled by the MLP width: an estimate until measured
        ("h200-qwen2-0.5b", 1.0),
        ("h200-qwen2-1.5b-noprefix", 1.0),
        ("h200-smollm2", 1.0),
        ("h200-qwen2-1.5b-6gb", 1.0),
    ):
        p = load_profile(name)
        shape = p.model_shape()
        assert shape is not None and p.gpu_memory_utilization == 0.05
        kv = resolve_kv_cache_memory_bytes(p, shape)
        servers.append(server_footprint(name, shape, kv, p.served_dtype(shape), activation_scale=scale))
    plan = CohostPlan(gib(139.8), gib(5), tuple(servers))
    assert plan.fits, "\n".join(plan.lines())
    assert 115 * GIB < plan.used_bytes < 116 * GIB  # the numbers written in docs/gpu.md
    # each start only needs 0.05 x 139.8 GiB free: true whatever the order, since everything fits
    assert plan.spare_bytes + gib(5) > 0.05 * gib(139.8)
    assert H200_QWEN2_1P5B_FP16.weights_loaded > QWEN15.weight_bytes("float16")
