"""The report of a real GPU run, on machines without a GPU: `tests/fixtures/runs/h200-qwen2-7b` is the lab's ladder
run of Qwen2-7B's shape (random weights) on the H200, 1 / 16 / 64 users (docs/gpu.md, 2026-12-01), copied as it came
back from the GPU host. Its GPU telemetry, energy and physical-limit sections must render from the files alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analysis.gpu import gpu_context
from analysis.pipeline import analyze
from analysis.report import build_report

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "h200-qwen2-7b"


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "h200-qwen2-7b"))


def test_gpu_sections_of_the_h200_run(run: Path) -> None:
    summary = analyze(run)
    ctx = gpu_context(run, summary.table)
    assert ctx["available"] and ctx["devices"][0]["name"] == "NVIDIA H200" and ctx["dummy_weights"]
    assert ctx["shared_gpu"]  # the lab co-hosts its six servers: the report must say the card was shared
    energy = {int(r["level"]): r for r in ctx["energy_rows"]}
    assert set(energy) == {0, 1, 2} and {r["energy_method"] for r in energy.values()} == {"counter"}
    per_token = {lv: r["energy_j"] / r["output_tokens"] for lv, r in energy.items()}
    assert 1.0 < per_token[0] < 5.0 and per_token[2] < per_token[0] / 5  # batching: far fewer joules per token
    limit = {int(r["level"]): r for r in ctx["limit"]["rows"]}
    # decode of a 15.2 GB model at batch 1 on 4.8 TB/s: a 2.95 ms floor, measured ITL p50 4.62 ms
    assert limit[0]["bound"] == "memory" and limit[0]["floor_ms"] == pytest.approx(2.95, abs=0.01)
    assert limit[0]["ratio"] == pytest.approx(limit[0]["itl_p50_ms"] / limit[0]["floor_ms"])
    assert 1.0 < limit[0]["ratio"] < 2.5


def test_the_h200_report_renders_every_gpu_part(run: Path) -> None:
    html = build_report([run]).read_text()
    for part in ("gpu-energy-table", "gpu-limit-table", "gpu-dummy-weights", "gpu-shared"):
        assert f'id="{part}"' in html, part
    assert "No GPU telemetry" not in html and "NVIDIA H200" in html
