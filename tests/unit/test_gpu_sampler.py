"""The NVML sampler against a fake NVML: CSV columns and values, energy, CUDA_VISIBLE_DEVICES, the unavailable paths,
and the process handle (start, SIGTERM, last sample)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from vlab.telemetry.gpu import (
    CSV_COLUMNS,
    GPU_CSV,
    GPU_JSON,
    NVML_MODULE_ENV,
    Nvml,
    sample_loop,
    show,
    start_gpu_sampler,
    visible_indices,
)
from vlab.testing.fake_nvml import FakeGpu, FakeNvmlLib


def _run(tmp_path: Path, lib: FakeNvmlLib, n: int = 3, interval: float = 0.01) -> tuple[pd.DataFrame | None, dict]:
    out = tmp_path / GPU_CSV
    assert sample_loop(out, interval, Nvml(lib), max_samples=n, install_signals=False) == 0
    note = json.loads((tmp_path / GPU_JSON).read_text())
    return (pd.read_csv(out) if out.exists() else None), note


def test_csv_columns_and_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lib = FakeNvmlLib([FakeGpu(energy_mj=9_864_530, energy_step_mj=500), FakeGpu(name="NVIDIA L4", uuid="GPU-2")])
    frame, note = _run(tmp_path, lib, n=3)
    assert tuple(frame.columns) == CSV_COLUMNS
    assert list(frame["gpu"]) == [0, 1, 0, 1, 0, 1]
    g0 = frame[frame["gpu"] == 0]
    # the counter (mJ) is read once for the note (energy_counter) and then once per sample, +500 mJ each read
    assert list(g0["energy_j"]) == [9865.03, 9865.53, 9866.03]
    assert set(g0["power_w"]) == {100.0} and set(g0["util_pct"]) == {50} and set(g0["temp_c"]) == {40}
    assert set(g0["mem_total_bytes"]) == {150_754_820_096} and set(g0["mem_used_bytes"]) == {10 * 2**30}
    assert set(g0["sm_clock_mhz"]) == {1980} and set(g0["mem_clock_mhz"]) == {3201}
    assert frame["t_s"].between(time.time() - 60, time.time()).all()
    assert note["available"] and note["samples"] == 3 and note["errors"] == 0 and note["driver"] == "580.159.04"
    d0, d1 = note["devices"]
    assert d0["card"]["key"] == "H200" and d1["card"]["key"] == "L4"
    assert d0["nvml_bandwidth_bytes_per_s"] == 3201e6 * 2 * 6016 / 8  # max memory clock x DDR x bus / 8
    assert d0["energy_counter"] and d0["compute_processes"] == 1 and d0["power_limit_w"] == 700
    assert note["cost"]["cpu_ms_mean"] is not None and note["cost"]["cpu_ms_mean"] >= 0
    assert lib.initialized == 0  # nvmlShutdown was called


def test_no_energy_counter_gives_empty_cells(tmp_path: Path) -> None:
    frame, note = _run(tmp_path, FakeNvmlLib([FakeGpu(energy_supported=False)]), n=2)
    assert frame["energy_j"].isna().all() and frame["power_w"].notna().all()
    assert note["devices"][0]["energy_counter"] is False


def test_unknown_card_has_no_table_entry(tmp_path: Path) -> None:
    _, note = _run(tmp_path, FakeNvmlLib([FakeGpu(name="NVIDIA GeForce RTX 3090")]), n=1)
    assert note["devices"][0]["card"] is None


@pytest.mark.parametrize(
    ("lib", "env", "reason"),
    [
        (FakeNvmlLib(fail_init=True), None, "NVML Shared Library Not Found"),
        (FakeNvmlLib(gpus=[]), None, "NVML sees no GPU"),
        (FakeNvmlLib(), "", "hides every GPU"),
        (FakeNvmlLib(), "-1", "hides every GPU"),
    ],
)
def test_unavailable_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lib: FakeNvmlLib, env: str | None, reason: str
) -> None:
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    frame, note = _run(tmp_path, lib)
    assert frame is None and note["available"] is False and reason in note["reason"]


def test_missing_module_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_MODULE_ENV, "no_such_nvml_module")
    assert sample_loop(tmp_path / GPU_CSV, 0.1, max_samples=1, install_signals=False) == 0
    note = json.loads((tmp_path / GPU_JSON).read_text())
    assert not note["available"] and "no_such_nvml_module" in note["reason"] and "nvidia-ml-py" in note["reason"]
    assert show()["available"] is False


def test_visible_indices() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3"]
    assert visible_indices(3, uuids, None)[0] == [0, 1, 2]
    assert visible_indices(3, uuids, "2,0")[0] == [2, 0]
    assert visible_indices(3, uuids, "GPU-bbbb")[0] == [1]  # a UUID prefix
    assert visible_indices(3, uuids, "1,7,0")[0] == [1]  # CUDA stops at the first invalid entry
    assert visible_indices(3, uuids, "GPU-")[0] == []  # ambiguous prefix: invalid
    assert visible_indices(3, uuids, "")[0] == []
    assert visible_indices(3, uuids, "MIG-1234")[0] == [0, 1, 2]


def test_visible_gpus_are_the_ones_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    lib = FakeNvmlLib([FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", name="NVIDIA L4")])
    frame, note = _run(tmp_path, lib, n=2)
    assert set(frame["gpu"]) == {1}
    assert note["devices"][0]["index"] == 1 and note["devices"][0]["cuda_index"] == 0


def test_handle_starts_stops_and_takes_a_last_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NVML_MODULE_ENV, "vlab.testing.fake_nvml")
    monkeypatch.setenv("VLAB_FAKE_NVML_GPUS", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    handle = start_gpu_sampler(tmp_path, interval_s=0.2)
    assert handle.pid is not None
    deadline = time.time() + 20
    while time.time() < deadline:
        csv = tmp_path / GPU_CSV
        if csv.exists() and len(csv.read_text().splitlines()) >= 3:  # header + 2 samples
            break
        time.sleep(0.1)
    before = len((tmp_path / GPU_CSV).read_text().splitlines())
    assert before >= 3, "the sampler wrote no sample in 20 s"
    assert handle.stop() == 0
    assert handle.stop() is None  # twice is fine
    rows = (tmp_path / GPU_CSV).read_text().splitlines()
    assert len(rows) >= before + 1  # the last sample, taken after SIGTERM
    note = json.loads((tmp_path / GPU_JSON).read_text())
    assert note["available"] and note["samples"] == len(rows) - 1 and "ended_at" in note
    frame = pd.read_csv(tmp_path / GPU_CSV)
    assert frame["energy_j"].is_monotonic_increasing  # 100 W for real: counter = power x time
    assert not (tmp_path / "gpu_metrics.log").exists()  # an empty log is removed


def test_handle_without_nvml_installed_writes_the_note_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NVML_MODULE_ENV, raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    handle = start_gpu_sampler(tmp_path / "run", 0.5)
    assert handle.pid is None and handle.stop() is None
    note = json.loads((tmp_path / "run" / GPU_JSON).read_text())
    assert note == {"available": False, "reason": "nvidia-ml-py (pynvml) is not installed"}
    assert not (tmp_path / "run" / GPU_CSV).exists()


def test_real_pynvml_without_a_driver_if_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nvidia-ml-py installed and no NVIDIA driver, nvmlInit raises NVMLError_LibraryNotFound: a note."""
    pytest.importorskip("pynvml")
    monkeypatch.delenv(NVML_MODULE_ENV, raising=False)
    try:
        Nvml.load().init()
    except Exception:
        pass
    else:
        pytest.skip("NVML works here: a GPU machine")
    assert sample_loop(tmp_path / GPU_CSV, 0.1, max_samples=1, install_signals=False) == 0
    note = json.loads((tmp_path / GPU_JSON).read_text())
    assert not note["available"] and "NVML" in note["reason"]
