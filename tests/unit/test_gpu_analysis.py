"""analysis/gpu.py on a small synthetic gpu_metrics.csv and levels frame: energy per token by hand, the physical
limit table, and the template partial with and without GPU telemetry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.gpu import energy_table, gpu_context, limit_table, load_gpu_metrics, prefill_row, window_energy
from server.facts import facts_for
from server.profile import load_profile
from vlab.core.hardware import card_for
from vlab.core.server_facts import write_server_facts

T0 = 1_000.0
COLUMNS = "t_s,gpu,util_pct,mem_used_bytes,mem_total_bytes,power_w,energy_j,sm_clock_mhz,mem_clock_mhz,temp_c"


def _write_gpu(run: Path, with_energy: bool = True, power=lambda g, t: 200.0 if g == 0 else 100.0) -> None:
    """Two GPUs sampled every 0.5 s over [1000, 1010]; GPU 0 draws 200 W, GPU 1 100 W (constant unless given);
    the counters start at 5,000 J and 7,000 J and grow by power x time."""
    lines = [COLUMNS]
    for k in range(21):
        t = T0 + 0.5 * k
        for g, base in ((0, 5000.0), (1, 7000.0)):
            p = power(g, t)
            e = base + p * (t - T0) if with_energy else ""
            lines.append(f"{t},{g},{60 + 10 * g},{(8 + g) * 2**30},{141 * 2**30},{p},{e},1980,3201,40")
    run.mkdir(parents=True, exist_ok=True)
    (run / "gpu_metrics.csv").write_text("\n".join(lines) + "\n")
    note = {"available": True, "interval_s": 0.5, "driver": "580", "cost": {"cpu_ms_mean": 0.2}}
    note["devices"] = [
        {
            "index": g,
            "name": "NVIDIA H200",
            "mem_total_bytes": 141 * 2**30,
            "power_limit_w": 700,
            "compute_processes": 1,
        }
        for g in (0, 1)
    ]
    (run / "gpu_metrics.json").write_text(json.dumps(note))


def _levels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "level": [0, 1],
            "target": [1.0, 64.0],
            "start_s": [T0, T0 + 5.0],
            "end_s": [T0 + 5.0, T0 + 10.0],
            "window_start_s": [T0 + 1.25, T0 + 5.5],
            "window_end_s": [T0 + 5.25, T0 + 9.5],
            "window_s": [4.0, 4.0],
            "output_tok_per_s": [100.0, 640.0],
            "n_completed": [2, 10],
            "itl_p50": [6.4623616, 8.87845088],
            "ttft_p50": [15.974469874158665, 40.0],
            "prompt_tokens_mean": [512.0, 512.0],
        }
    )


def test_energy_per_token_by_hand(tmp_path: Path) -> None:
    _write_gpu(tmp_path)
    table = energy_table(load_gpu_metrics(tmp_path), _levels())
    r0 = table.iloc[0]
    # window 4 s; GPU 0: 200 W x 4 s = 800 J, GPU 1: 100 W x 4 s = 400 J -> 1,200 J (counter interpolated at edges)
    assert r0["energy_j"] == pytest.approx(1200.0) and r0["energy_method"] == "counter"
    assert r0["output_tokens"] == 100.0 * 4.0  # output tok/s x window
    assert r0["j_per_token"] == pytest.approx(1200.0 / 400.0)  # 3 J/token
    assert r0["tokens_per_j"] == pytest.approx(400.0 / 1200.0)
    assert r0["power_mean_w"] == pytest.approx(300.0)  # summed over the two GPUs
    assert r0["util_mean_pct"] == pytest.approx(65.0) and r0["util_max_pct"] == 70.0
    assert r0["mem_used_max_bytes"] == 9 * 2**30 and r0["samples"] == 8  # t = 1001.5 ... 1005.0
    r1 = table.iloc[1]
    assert r1["energy_j"] == pytest.approx(1200.0) and r1["j_per_token"] == pytest.approx(1200.0 / 2560.0)


def test_energy_without_counter_integrates_power(tmp_path: Path) -> None:
    _write_gpu(tmp_path, with_energy=False, power=lambda g, t: 100.0 + 10.0 * (t - T0) if g == 0 else 0.0)
    r0 = energy_table(load_gpu_metrics(tmp_path), _levels()).iloc[0]
    # ∫ from 1.25 to 5.25 of (100 + 10 t) dt = 100 x 4 + 10 x (5.25² − 1.25²) / 2 = 400 + 130 (trapezoids: exact)
    assert r0["energy_j"] == pytest.approx(530.0) and r0["energy_method"] == "power integral"


def test_window_energy_scaled_when_samples_do_not_reach_the_edges() -> None:
    t = np.array([1002.0, 1003.0, 1004.0])
    e = 5000.0 + 200.0 * (t - T0)
    energy, how = window_energy(t, e, np.full(3, 200.0), 1001.5, 1004.5)
    # 400 J between the first and last sample (2 s), scaled to the 3 s window
    assert how == "counter, scaled" and energy == pytest.approx(600.0)
    energy, how = window_energy(t, np.array([3.0, 2.0, 1.0]), np.full(3, math.nan), 1002.0, 1004.0)
    assert math.isnan(energy)  # a counter that went down (driver reloaded): no energy


def test_limit_table_by_hand(tmp_path: Path) -> None:
    (tmp_path / "server_metrics.csv").write_text("t_s,running\n" + "".join(f"{T0 + k},64\n" for k in range(6, 11)))
    shape = load_profile("h200-qwen2-1.5b").model_shape()
    h200 = card_for("NVIDIA H200")
    from analysis.gpu import mean_running

    running = mean_running(tmp_path, _levels())
    assert math.isnan(running[0]) and running[1] == 64.0  # no server sample in level 0's window
    table = limit_table(_levels(), shape, h200, "float16", running)
    r0, r1 = table.iloc[0], table.iloc[1]
    assert r0["batch"] == 1.0 and r0["batch_source"].startswith("users")
    # level 0: 400 output tokens / 2 requests = 200 each -> context 512 + 100 = 612 tokens
    assert r0["mean_context"] == 612.0
    assert r0["floor_ms"] == pytest.approx((3_087_253_504 + 612 * 28_672) / 4.8e12 * 1000)  # 0.6468 ms
    # level 1: 2,560 tokens / 10 = 256 each -> 640; batch 64 from the server: 64 x 640 x 28,672 B of KV
    assert r1["mean_context"] == 640.0 and r1["batch_source"] == "server: mean running"
    floor1 = (3_087_253_504 + 64 * 640 * 28_672) / 4.8e12 * 1000  # 0.88785 ms
    assert r1["floor_ms"] == pytest.approx(floor1) and r1["bound"] == "memory"
    assert r1["ratio"] == pytest.approx(8.87845088 / floor1) and "engine" in r1["verdict"]  # ~10x
    p = prefill_row(_levels(), shape, h200, "float16")
    assert p["one_user"] and p["floor_ms"] == pytest.approx(512 * 2 * 1_543_626_752 / 989.5e12 * 1000)  # 1.597 ms
    assert p["ratio"] == pytest.approx(10.0) and p["bound"] == "compute"


def test_open_loop_without_server_metrics_has_no_batch() -> None:
    shape = load_profile("h200-qwen2-1.5b").model_shape()
    table = limit_table(_levels(), shape, card_for("H200"), "float16", None, open_loop=True)
    assert table["floor_ms"].isna().all() and "no floor" in table.iloc[0]["verdict"]


def _render(ctx: dict) -> str:
    from analysis.report import template_env

    return template_env().get_template("gpu.html.j2").render(gpu=ctx)


def test_context_without_gpu_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "gpu_metrics.json").write_text(json.dumps({"available": False, "reason": "NVML not usable: x"}))
    ctx = gpu_context(tmp_path, _levels())
    assert ctx["available"] is False and ctx["reason"] == "NVML not usable: x"
    assert ctx["limit"]["available"] is False and "server.json" in ctx["limit"]["reason"]
    html = _render(ctx)
    assert html.count("No GPU telemetry for this run: NVML not usable: x.") == 1
    assert "gpu-energy-table" not in html and "gpu-dummy-weights" not in html
    assert "No GPU telemetry" in _render(gpu_context(tmp_path / "nothing", _levels()))


def test_context_with_gpu_and_dummy_weights(tmp_path: Path) -> None:
    _write_gpu(tmp_path)
    write_server_facts(tmp_path, facts_for(load_profile("h200-qwen2-1.5b"), gpu_name="NVIDIA H200"))
    ctx = gpu_context(tmp_path, _levels())
    assert ctx["available"] and ctx["dummy_weights"] and ctx["figure"].startswith("data:image/png;base64,")
    assert ctx["limit"]["available"] and ctx["limit"]["card"].key == "H200" and len(ctx["limit"]["rows"]) == 2
    html = _render(ctx)
    for needle in ("gpu-dummy-weights", "random weights", "gpu-energy-table", "gpu-limit-table", "gpu-prefill"):
        assert needle in html
    assert "<code>counter</code>" in html and "datasheet" in html


def test_unknown_card_says_so(tmp_path: Path) -> None:
    _write_gpu(tmp_path)
    note = json.loads((tmp_path / "gpu_metrics.json").read_text())
    for d in note["devices"]:
        d["name"] = "NVIDIA GeForce RTX 3090"
    (tmp_path / "gpu_metrics.json").write_text(json.dumps(note))
    write_server_facts(tmp_path, facts_for(load_profile("h200-qwen2-1.5b")))
    ctx = gpu_context(tmp_path, _levels())
    assert not ctx["limit"]["available"] and "unknown for the card 'NVIDIA GeForce RTX 3090'" in ctx["limit"]["reason"]
    assert "No physical limit for this run" in _render(ctx)
