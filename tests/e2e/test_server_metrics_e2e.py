"""Server-side metrics: parsing recorded /metrics samples (this vLLM and older names), the sampler process (no
/metrics, a fake server, stop behaviour), the report's alignment of server series with client records, and two
end-to-end runs against real vLLM servers (the session one, and the tiny-KV profile that must queue or preempt)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.pipeline import analyze
from analysis.server_metrics import load_server_metrics

METRICS_FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
RUN_FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
CURRENT = METRICS_FIXTURES / "vllm-0.32.0-busy.txt"
OLD = METRICS_FIXTURES / "vllm-old-names.txt"


# ------------------------------------------------------------------------------------------------------ parsing
def _run(scenario_text: str, folder: Path, host: str) -> Path:
    from vlab.commands.runner import run_locust
    from vlab.core.scenario import load_scenario

    path = folder / "scenario.yaml"
    path.write_text(scenario_text)
    run_dir = folder / "run"
    code = run_locust(load_scenario(path), path, run_dir, host=host)
    assert code in (0, 1), (run_dir / "locust.log").read_text()[-3000:]
    return run_dir


@pytest.mark.e2e
def test_e2e_series_align_with_client_records(vllm_base_url: str, tmp_path: Path) -> None:
    run_dir = _run(
        "name: e2e-server-metrics\napi: {metrics_interval_s: 0.25}\n"
        "load: {stages: [{users: 2, duration: 6s}, {users: 6, duration: 6s}]}\n"
        "data: {prompt_tokens: 100, output_tokens: 48}\n",
        tmp_path,
        vllm_base_url,
    )
    meta = json.loads((run_dir / "run.json").read_text())
    series = load_server_metrics(run_dir)
    assert series.available, series.reason
    f = series.frame
    for col in ("running", "waiting", "kv_cache_usage"):
        assert f[col].notna().all() and len(f) >= 20, col
    t = f["t_s"].to_numpy()
    assert meta["started_at"] - 1 <= t[0] and t[-1] <= meta["ended_at"] + 2
    req = pd.read_csv(run_dir / "requests.csv", keep_default_na=False, na_values=[""])
    ok = req[req["ok"] == 1]
    assert len(ok) >= 5
    assert t[0] <= ok["t_start_s"].min() + 1.0 and t[-1] >= (ok["t_start_s"] + ok["e2e_ms"] / 1000).max() - 1.0
    # while the client had requests in flight, the server reported running ones
    starts, ends = ok["t_start_s"].to_numpy(), (ok["t_start_s"] + ok["e2e_ms"] / 1000).to_numpy()
    busy = np.array([((starts <= x) & (ends >= x)).sum() for x in t])
    assert (f["running"].to_numpy()[busy >= 2] > 0).mean() > 0.8
    assert f["kv_cache_usage"].max() > 0
    # the server counted at least the client's requests (a shared dev server may add others)
    s = analyze(run_dir)
    h = s.server.headline
    assert h.server_requests >= h.client_requests >= 5
    assert math.isfinite(h.server_ttft_mean_ms) and h.server_ttft_mean_ms <= h.client_ttft_mean_ms + 5
    assert (s.server.table["samples"] > 0).all()


@pytest.mark.e2e
def test_tiny_kv_profile_queues_or_preempts_at_16_users(tmp_path: Path) -> None:
    from server.launcher import start_server
    from server.profile import load_profile
    from vlab.client.http import find_free_port

    server = start_server(
        load_profile("cpu-smollm2-tinykv"), port=find_free_port(), log_path=tmp_path / "server-tinykv.log"
    )
    try:
        run_dir = _run(
            "name: e2e-tinykv\napi: {metrics_interval_s: 0.25}\nload: {users: 16, duration: 20s, spawn_rate: 16}\n"
            "data: {prompt_tokens: 200, output_tokens: 128, ignore_eos: true}\n",
            tmp_path,
            server.base_url,
        )
    finally:
        server.stop()
    series = load_server_metrics(run_dir)
    assert series.available, series.reason
    assert series.info["kv_capacity_tokens"] <= 3072
    f = series.frame
    waited = float(f["waiting"].max())
    preempted = float(f["preemptions"].iloc[-1] - f["preemptions"].iloc[0])
    assert waited > 0 or preempted > 0, f"no queueing and no preemption (max waiting {waited}, {preempted})"
    assert f["kv_cache_usage"].max() > 0.8
