"""The adaptive search: its probe sequence (pure), and one real search against the local vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlab.commands.adaptive import next_target


def simulate(limit: float, start: float, open_loop: bool) -> list[float]:
    """Probe loads visited when every load ≤ `limit` meets the SLO."""
    good: list[float] = []
    bad: list[float] = []
    seen = []
    while (t := next_target(good, bad, start, open_loop)) is not None and len(seen) < 30:
        seen.append(t)
        (good if t <= limit else bad).append(t)
    return seen


def test_doubling_then_bisection_for_users() -> None:
    assert simulate(limit=11, start=1, open_loop=False) == [1, 2, 4, 8, 16, 12, 10, 11]
    assert simulate(limit=0, start=4, open_loop=False) == [4, 2, 1]  # nothing meets it: down to 1 user


def test_rates_stop_within_ten_percent() -> None:
    seen = simulate(limit=3.3, start=1.0, open_loop=True)
    assert seen[:3] == [1.0, 2.0, 4.0]
    best = max(t for t in seen if t <= 3.3)
    assert 3.3 / 1.1 <= best <= 3.3 and len(seen) <= 8


@pytest.mark.e2e
def test_adaptive_sweep_finds_a_load_meeting_the_slo(vllm_base_url: str, tmp_path: Path) -> None:
    from vlab.commands.cli import main

    scenario = tmp_path / "adaptive.yaml"
    scenario.write_text(
        "name: adaptive\napi: {metrics_interval_s: 0}\nload: {users: 1, duration: 6s}\n"
        "data: {prompt_tokens: 40, output_tokens: 8}\nslo: {ttft_ms: 60000}\n"
    )
    run_dir = tmp_path / "run"
    code = main(["sweep", str(scenario), "--host", vllm_base_url, "--run-dir", str(run_dir), "--adaptive",
                 "--max-probes", "2"])  # fmt: skip
    assert code == 0
    result = json.loads((run_dir / "adaptive.json").read_text())
    assert [p["target"] for p in result["probes"]] == [1, 2] and result["best"]["target"] == 2
    assert (run_dir / "index.html").exists()
