"""Fast checks of the server profiles, the command they build and `vlab serve --dry-run` (no server is started)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from server.launcher import log_tail
from server.profile import build_command, list_profiles, load_profile
from vlab.client.http import find_free_port, port_in_use
from vlab.core.errors import ConfigError
from vlab.core.paths import MODELS_DIR, SERVER_PYTHON

SHIPPED = ["cpu-smollm2", "cpu-smollm2-noprefix", "cpu-smollm2-tinykv", "rtx4050-6gb-qwen2-1.5b"]


def test_shipped_profiles_listed() -> None:
    assert set(SHIPPED) <= set(list_profiles())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    argv, env = build_command(profile)
    assert all(isinstance(arg, str) for arg in argv)
    assert argv[:3] == [str(SERVER_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert env["HF_HUB_OFFLINE"] == "1"


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_command_and_env() -> None:
    profile = load_profile("cpu-smollm2")
    argv, env = build_command(profile, port=8123)
    assert _flag(argv, "--model") == str(MODELS_DIR / "smollm2-135m-instruct")
    assert _flag(argv, "--port") == "8123"
    assert _flag(argv, "--dtype") == "bfloat16"
    assert _flag(argv, "--max-model-len") == "2048"
    assert "--enable-prefix-caching" in argv
    assert "--gpu-memory-utilization" not in argv
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_OMP_THREADS_BIND"]
    assert "VLLM_CACHE_ROOT" in env and "TORCHINDUCTOR_CACHE_DIR" in env


def test_noprefix_and_tinykv_flags() -> None:
    argv, _ = build_command(load_profile("cpu-smollm2-noprefix"))
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    argv, env = build_command(load_profile("cpu-smollm2-tinykv"))
    assert int(_flag(argv, "--num-gpu-blocks-override")) * 128 < 16 * (200 + 128)  # 16 users cannot all fit
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_gpu_command_has_no_cpu_env() -> None:
    argv, env = build_command(load_profile("rtx4050-6gb-qwen2-1.5b"))
    assert _flag(argv, "--model") == "Qwen/Qwen2-1.5B-Instruct"
    assert _flag(argv, "--gpu-memory-utilization") == "0.85"
    assert _flag(argv, "--dtype") == "float16"
    assert not any(key.startswith("VLLM_CPU_") for key in env)
    assert "LD_PRELOAD" not in env


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


BASE = "name: t\nmodel: '{models_dir}/m'\nserved_model_name: m\nmax_model_len: 64\n"


def test_unknown_key_error_names_file_key_and_expected(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "kv_cache_gb: 2\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and "kv_cache_gb" in message and "kv_cache_gib" in message
    assert "\n" not in message


def test_wrong_type_and_device_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_model_len"):
        load_profile(_write(tmp_path, BASE.replace("64", "'lots'")))
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_profile(_write(tmp_path, BASE + "gpu_memory_utilization: 0.5\n"))
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_profile(_write(tmp_path, BASE + "env: [unclosed\n"))
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("no-such-profile")


def test_tensor_parallel_size_is_a_cuda_flag(tmp_path: Path) -> None:
    cuda = BASE + "device: cuda\ntensor_parallel_size: 2\n"
    argv, _ = build_command(load_profile(_write(tmp_path, cuda)))
    assert _flag(argv, "--tensor-parallel-size") == "2"
    assert "--tensor-parallel-size" not in build_command(load_profile(_write(tmp_path, BASE)))[0]  # 1: vLLM's default
    with pytest.raises(ConfigError, match="needs device 'cuda'"):
        load_profile(_write(tmp_path, BASE + "tensor_parallel_size: 2\n"))
    with pytest.raises(ConfigError, match="use the profile key tensor_parallel_size"):
        load_profile(_write(tmp_path, BASE + "device: cuda\nextra_args: ['--tensor-parallel-size', '2']\n"))


def test_visible_gpus_narrowed_by_cuda_visible_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.launcher import visible_gpu_count

    smi = tmp_path / "nvidia-smi"  # a stand-in for nvidia-smi -L on a 4-GPU host (this machine has no GPU)
    smi.write_text('#!/bin/sh\nfor i in 0 1 2 3; do echo "GPU $i: NVIDIA H200 (UUID: GPU-$i)"; done\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu_count() == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert visible_gpu_count() == 2
    monkeypatch.setenv("PATH", "/nonexistent")
    assert visible_gpu_count() is None


def test_extra_args_and_env_override(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, BASE + "extra_args: ['--seed', '1']\nenv: {HF_HUB_OFFLINE: '0'}\n"))
    argv, env = build_command(profile)
    assert argv[-2:] == ["--seed", "1"]
    assert env["HF_HUB_OFFLINE"] == "0"


def test_dry_run_prints_command_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    from vlab.commands.cli import main

    assert main(["serve", "--profile", "rtx4050-6gb-qwen2-1.5b", "--dry-run", "--port", "9001"]) == 0
    out = capsys.readouterr().out
    assert "export HF_HUB_OFFLINE=1" in out
    command = [line for line in out.splitlines() if not line.startswith(("#", "export "))]
    argv = shlex.split(command[-1])
    assert argv[argv.index("--port") + 1] == "9001"
    assert argv[argv.index("--model") + 1] == "Qwen/Qwen2-1.5B-Instruct"


def test_dry_run_unknown_profile_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    from vlab.commands.cli import main

    assert main(["serve", "--profile", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile" in err and "Traceback" not in err


def test_port_helpers(tmp_path: Path) -> None:
    port = find_free_port()
    assert 0 < port < 65536 and not port_in_use("127.0.0.1", port)
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert log_tail(log, 3) == "line 47\nline 48\nline 49"


def test_transformers_profiles_build_transformers_serve() -> None:
    argv, env = build_command(load_profile("cpu-smollm2-transformers"), port=8123)
    assert argv[:5] == [str(SERVER_PYTHON), "-m", "transformers.cli.transformers", "serve", "smollm2"]
    assert _flag(argv, "--port") == "8123" and _flag(argv, "--device") == "cpu" and "--continuous-batching" not in argv
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"].endswith("hf-hub")
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and "VLLM_TARGET_DEVICE" not in env
    argv, _ = build_command(load_profile("cpu-smollm2-transformers-cb"))
    assert "--continuous-batching" in argv
    assert (_flag(argv, "--cb-block-size"), _flag(argv, "--cb-num-blocks")) == ("32", "256")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("engine: transformers\nkv_cache_gib: 2\n", "kv_cache_gib applies to engine 'vllm' only"),
        ("engine: transformers\nenforce_eager: true\n", "enforce_eager applies to engine 'vllm' only"),
        ("engine: transformers\ncb_num_blocks: 8\n", "cb_\\* keys need continuous_batching"),
        ("continuous_batching: true\n", "apply to engine 'transformers' only"),
        ("engine: transformers\nserved_model_name: 'a b'\n", "hub id"),
    ],
)
def test_engine_keys_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    text = BASE.replace("served_model_name: m\n", "") if "served_model_name" in extra else BASE
    with pytest.raises(ConfigError, match=message):
        load_profile(_write(tmp_path, text + extra))


def test_hub_view_links_the_model_folder(tmp_path: Path) -> None:
    from server.hub_cache import ensure_hub_view

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "old.bin").write_text("x")
    snapshot = ensure_hub_view(model, "org/name", tmp_path / "hub")
    (model / "old.bin").unlink()
    snapshot = ensure_hub_view(model, "org/name", tmp_path / "hub")
    assert snapshot == tmp_path / "hub" / "models--org--name" / "snapshots" / "local"
    assert (tmp_path / "hub" / "models--org--name" / "refs" / "main").read_text() == "local"
    assert [p.name for p in snapshot.iterdir()] == ["config.json"]
    assert (snapshot / "config.json").resolve() == (model / "config.json").resolve()
