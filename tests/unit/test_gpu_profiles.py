"""GPU profiles: the new keys, their validation, the derived 6 GB budget, and a cuda profile on a machine without a
GPU (one clear line at start; --dry-run still prints). Nothing is started."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import pytest

import server.launcher as launcher
from server.facts import facts_for
from server.profile import build_command, kv_budget_for, list_profiles, load_profile
from vlab.core.errors import ConfigError, UserError
from vlab.core.server_facts import read_server_facts, write_server_facts

H200_PROFILES = [
    "h200-smollm2",
    "h200-qwen2-0.5b",
    "h200-qwen2-1.5b",
    "h200-qwen2-7b",
    "h200-qwen2-1.5b-6gb",
    "h200-qwen2-1.5b-noprefix",
]
BASE = "name: t\nmodel: '{models_dir}/m'\nserved_model_name: m\nmax_model_len: 64\n"
CUDA = BASE + "device: cuda\nconfig_json: server/model_configs/qwen2-1.5b.json\n"


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", H200_PROFILES)
def test_h200_profiles_load_and_build(name: str) -> None:
    assert name in list_profiles()
    p = load_profile(name)
    argv, env = build_command(p)
    assert p.device == "cuda" and _flag(argv, "--gpu-memory-utilization") == "0.05"
    assert int(_flag(argv, "--kv-cache-memory-bytes")) > 0
    assert env["NCCL_NVLS_ENABLE"] == "0" and not any(k.startswith("VLLM_CPU_") for k in env)
    assert ("--load-format" in argv) == p.dummy_weights == (name != "h200-smollm2")
    if p.dummy_weights:
        assert _flag(argv, "--load-format") == "dummy"


def test_main_profile_runs_512_users_at_once() -> None:
    argv, _ = build_command(load_profile("h200-qwen2-1.5b"))
    assert int(_flag(argv, "--max-num-seqs")) >= 512
    assert int(_flag(argv, "--kv-cache-memory-bytes")) == 30 * 1024**3
    assert int(_flag(argv, "--kv-cache-memory-bytes")) // 28_672 >= 512 * (512 + 256)


def test_6gb_profile_derives_its_budget() -> None:
    p = load_profile("h200-qwen2-1.5b-6gb")
    argv, _ = build_command(p)
    assert int(_flag(argv, "--kv-cache-memory-bytes")) == 1_325_650_290  # tests/unit/test_physical_limit.py
    assert _flag(argv, "--max-num-seqs") == "256" and _flag(argv, "--max-num-batched-tokens") == "2048"
    budget = kv_budget_for(p)
    assert budget is not None and budget.tokens(28_672) == 46_224


def test_new_keys_are_validated(tmp_path: Path) -> None:
    cases = {
        BASE + "kv_cache_memory_bytes: 1000\n": "applies to device 'cuda' only",
        BASE + "kv_budget: {card: L4}\n": "applies to device 'cuda' only",
        CUDA + "kv_budget: {card: L4}\nkv_cache_memory_bytes: 1000\n": "not both",
        CUDA + "kv_budget: {card: 'Voodoo 3'}\n": "unknown card",
        CUDA + "kv_budget: {card: L4, utilisation: 0.9}\n": "expected one of: card, utilization",
        CUDA + "extra_args: ['--load-format', 'dummy']\n": "dummy_weights",
        CUDA + "extra_args: ['--max-num-seqs', '4']\n": "max_num_seqs",
        CUDA + "kv_cache_memory_bytes: -1\n": "kv_cache_memory_bytes",
        CUDA + "max_num_seqs: 0\n": "max_num_seqs",
    }
    for text, match in cases.items():
        with pytest.raises(ConfigError, match=match) as info:
            load_profile(_write(tmp_path, text))
        assert "\n" not in str(info.value), text


def test_budget_that_cannot_hold_the_weights_is_one_line(tmp_path: Path) -> None:
    text = CUDA.replace("qwen2-1.5b", "qwen2-7b") + "kv_budget: {card: RTX 4050 Laptop, utilization: 0.9}\n"
    with pytest.raises(ConfigError, match="cannot hold the weights") as info:
        load_profile(_write(tmp_path, text))
    assert "\n" not in str(info.value) and "p.yaml" in str(info.value)


def test_kv_cache_smaller_than_one_request_is_refused(tmp_path: Path) -> None:
    text = CUDA.replace("max_model_len: 64", "max_model_len: 4096") + "kv_cache_memory_bytes: 28672000\n"
    with pytest.raises(ConfigError, match=r"1,000 tokens .* fewer than max_model_len 4,096"):
        load_profile(_write(tmp_path, text))


def test_kv_budget_without_a_config_json_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs the model's config\.json") as info:
        load_profile(_write(tmp_path, BASE + "device: cuda\nkv_budget: {card: L4}\n"))
    assert "\n" not in str(info.value)


def test_kv_budget_overrides_and_dummy_field(tmp_path: Path) -> None:
    spec = "{card: L4, utilization: 0.5, peak_activation_gib: 1, non_torch_gib: 0, cudagraph_gib: 0}"
    text = CUDA + f"kv_budget: {spec}\n"
    p = load_profile(_write(tmp_path, text + "dummy_weights: true\n"))
    budget = kv_budget_for(p)
    assert budget.kv_bytes == 12 * 1024**3 - 3_087_428_608 - 1024**3  # 0.5 x 24 GiB - weights - 1 GiB
    assert _flag(build_command(p)[0], "--load-format") == "dummy"


def _no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv(launcher.NVIDIA_DEV_ENV, str(tmp_path / "no-nvidia0"))


def test_cuda_profile_without_gpu_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_gpu(monkeypatch, tmp_path)
    present, why = launcher.detect_nvidia_gpu()
    assert not present and "nvidia-smi not found" in why
    with pytest.raises(UserError) as info:
        launcher.check_startable(load_profile("h200-qwen2-1.5b"))
    message = str(info.value)
    assert "\n" not in message and "NVIDIA GPU" in message and "h200-qwen2-1.5b" in message


def test_dry_run_still_prints_without_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_gpu(monkeypatch, tmp_path)
    from vlab.commands.cli import main

    assert main(["serve", "--profile", "h200-qwen2-1.5b-6gb", "--dry-run"]) == 0
    out = capsys.readouterr().out
    argv = shlex.split([line for line in out.splitlines() if not line.startswith(("#", "export "))][-1])
    assert _flag(argv, "--kv-cache-memory-bytes") == "1325650290" and "--load-format" in argv


def _fake_smi(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_detect_gpu_with_fake_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(launcher.NVIDIA_DEV_ENV, str(tmp_path / "no-nvidia0"))
    monkeypatch.setenv("PATH", str(_fake_smi(tmp_path, "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\n")))
    assert launcher.detect_nvidia_gpu() == (True, "nvidia-smi lists 1 GPU(s)")
    monkeypatch.setenv("PATH", str(_fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed'; exit 9\n")))
    present, why = launcher.detect_nvidia_gpu()
    assert not present and "exited 9" in why
    node = tmp_path / "nvidia0"
    node.write_text("")
    monkeypatch.setenv(launcher.NVIDIA_DEV_ENV, str(node))
    assert launcher.detect_nvidia_gpu() == (True, f"{node} exists")


def test_server_facts_round_trip(tmp_path: Path) -> None:
    facts = facts_for(load_profile("h200-qwen2-1.5b-6gb"), gpu_name="NVIDIA H200", vllm_version="0.26.0")
    assert facts.dummy_weights and facts.kv_cache_memory_bytes == 1_325_650_290 and facts.dtype == "float16"
    assert facts.model_shape is not None and facts.model_shape.params == 1_543_714_304
    assert facts.kv_budget and any("1.235 GiB" in line for line in facts.kv_budget)
    write_server_facts(tmp_path, facts)
    back, reason = read_server_facts(tmp_path)
    assert back == facts and reason == ""
    (tmp_path / "server.json").write_text("{not json")
    none, reason = read_server_facts(tmp_path)
    assert none is None and "unreadable" in reason and "\n" not in reason
    assert read_server_facts(tmp_path / "missing")[0] is None
    assert os.path.basename(str(write_server_facts(tmp_path, facts))) == "server.json"
