"""ModelShape from config.json against hand-computed numbers and the README of shared/gpu-offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlab.core.errors import ConfigError
from vlab.core.model_shape import ModelShape

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models"
CONFIGS = ROOT / "server" / "model_configs"


def test_qwen2_1p5b_by_hand() -> None:
    s = ModelShape.from_config_file(FIXTURES / "qwen2-1.5b")
    assert (s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim) == (28, 1536, 12, 2, 128)
    assert s.qkv_bias and s.tie_word_embeddings
    embed = 151936 * 1536  # 233,373,696
    # q 1536x1536 + bias 1536; k and v 1536x256 + bias 256 each; o 1536x1536, no bias
    attention = 1536 * 1536 + 1536 + 2 * (1536 * 256 + 256) + 1536 * 1536  # 5,507,072
    mlp = 3 * 1536 * 8960  # 41,287,680
    norms = 2 * 1536
    total = embed + 28 * (attention + mlp + norms) + 1536  # tied: no lm_head
    assert s.attention_params_per_layer == attention
    assert s.params == total == 1_543_714_304
    assert s.weight_bytes("float16") == 2 * total == 3_087_428_608  # README: 3.09 GB
    assert s.kv_bytes_per_token("float16") == 2 * 28 * 2 * 128 * 2 == 28 * 1024  # README: 28 KiB
    assert s.matmul_params == total - 1536 * (2 * 28 + 1)  # all but the norms (the tied matrix is the lm_head)
    assert s.flops_per_token == 2 * s.matmul_params


def test_smollm2_135m_by_hand() -> None:
    s = ModelShape.from_config_file(FIXTURES / "smollm2-135m" / "config.json")
    assert s.architecture == "LlamaForCausalLM" and not s.qkv_bias and s.dtype == "bfloat16"
    attention = 576 * 576 + 2 * 576 * 192 + 576 * 576  # 3 KV heads x 64 = 192; Llama: no biases
    mlp = 3 * 576 * 1536
    total = 49152 * 576 + 30 * (attention + mlp + 2 * 576) + 576
    assert s.params == total == 134_515_008
    assert s.weight_bytes() == 269_030_016  # bf16 from config: the 260 MB folder of docs/server.md
    kv = 2 * 30 * 3 * 64 * 2  # 23,040 B = 22.5 KiB
    assert s.kv_bytes_per_token() == kv
    # the CPU profile's 2 GiB KV cache held 93,184 tokens = 728 blocks of 128 (docs/server.md)
    assert (2 * 1024**3) // (128 * kv) * 128 == 93_184


@pytest.mark.parametrize(
    ("name", "gb", "kib", "params"),
    [
        ("qwen2-0.5b", 0.99, 12, 494_032_768),
        ("qwen2-1.5b", 3.09, 28, 1_543_714_304),
        ("qwen2-7b", 15.2, 56, 7_615_616_512),
    ],
)
def test_qwen2_ladder_matches_gpu_offline_readme(name: str, gb: float, kib: int, params: int) -> None:
    s = ModelShape.from_config_file(CONFIGS / f"{name}.json")
    assert s.params == params
    assert round(s.weight_bytes("bfloat16") / 1e9, 2 if gb < 10 else 1) == gb
    assert s.kv_bytes_per_token("bfloat16") == kib * 1024


def test_qwen2_7b_untied_by_hand() -> None:
    s = ModelShape.from_config_file(CONFIGS / "qwen2-7b.json")
    embed = 152064 * 3584
    attention = 3584 * 3584 + 3584 + 2 * (3584 * 512 + 512) + 3584 * 3584
    per_layer = attention + 3 * 3584 * 18944 + 2 * 3584
    assert s.params == 2 * embed + 28 * per_layer + 3584  # embedding + lm_head
    assert s.matmul_params == embed + 28 * (attention + 3 * 3584 * 18944)  # no input lookup, no norms


def test_shipped_config_is_the_fixture() -> None:
    assert ModelShape.from_config_file(CONFIGS / "qwen2-1.5b.json") == ModelShape.from_config_file(
        FIXTURES / "qwen2-1.5b"
    )


def test_attention_flops_are_small_at_short_context() -> None:
    s = ModelShape.from_config_file(FIXTURES / "qwen2-1.5b")
    att = s.attention_flops_per_token(512)
    assert att == 4 * 28 * 12 * 128 * 512  # 88,080,384
    assert 0.028 < att / s.flops_per_token < 0.03  # 2.9 % at 512 tokens


def test_llama_style_defaults_and_dtypes(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,  # no num_key_value_heads: MHA; no head_dim: 64 / 4
        "intermediate_size": 128,
        "vocab_size": 100,
        "torch_dtype": "float32",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    s = ModelShape.from_config_file(path)
    assert (s.num_kv_heads, s.head_dim, s.tie_word_embeddings, s.qkv_bias) == (4, 16, False, False)
    assert s.params == 2 * 100 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    assert s.resolve_dtype("auto") == "bfloat16"  # vLLM's auto serves an fp32 checkpoint in 16 bits
    assert s.weight_bytes("float32") == 4 * s.params


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"num_local_experts": 8}, "mixture-of-experts"),
        ({"hidden_size": None}, "hidden_size"),
        ({"torch_dtype": "int8"}, "torch_dtype"),
    ],
)
def test_bad_configs_are_one_line(tmp_path: Path, change: dict, match: str) -> None:
    cfg = json.loads((FIXTURES / "qwen2-1.5b" / "config.json").read_text())
    for k, v in change.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=match) as info:
        ModelShape.from_config_file(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        ModelShape.from_config_file(tmp_path / "nope.json")
