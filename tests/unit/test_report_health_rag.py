"""Report additions computed from the run's own side files: load-generator health per level (client_monitor.csv)
and, for RAG runs, retrieval latency next to generation latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.pipeline import analyze
from analysis.report import build_report
from vlab.core.client_health import MONITOR_HEADER
from vlab.core.runfolder import MONITOR_CSV
from vlab.testing.synth import SynthSpec, make_run


def _run(tmp_path: Path) -> Path:
    run_dir = make_run(tmp_path / "run", SynthSpec(targets=[1, 4], duration_s=10, warmup_s=0, cooldown_s=0))
    levels = pd.read_csv(run_dir / "levels.csv")
    lines = [MONITOR_HEADER]
    for lv in levels.itertuples():
        cpu = 0.95 if lv.level == 1 else 0.20  # the second level is saturated
        lines += [f"{lv.start_s + i:.3f},node-a,{lv.level},{cpu},{1.5 + i},100,2,12,15,4,6\n" for i in range(3)]
    (run_dir / MONITOR_CSV).write_text("".join(lines))
    return run_dir


def test_client_health_per_level(tmp_path: Path) -> None:
    summary = analyze(_run(tmp_path))
    table = summary.table.set_index("level")
    assert table.loc[0, "client_flag"] == "" and table.loc[1, "client_flag"] == "saturated"
    assert table.loc[1, "client_cpu_max"] == 0.95 and table.loc[1, "client_lag_max_ms"] == 3.5
    assert any("load generator was saturated at 4 users" in o for o in summary.observations)


def test_runs_without_monitor_samples_still_render(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    (run_dir / MONITOR_CSV).unlink()
    summary = analyze(run_dir)
    assert (summary.table.client_flag == "").all()
    assert "Retrieval" not in build_report([run_dir]).read_text()  # no RAG, no retrieval table


def test_rag_retrieval_next_to_generation(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    requests = pd.read_csv(run_dir / "requests.csv")
    requests["retrieval_ms"] = np.where(requests.ok == 1, 25.0 + requests.index % 10, np.nan)
    requests["prompt_tokens_requested"] = -1
    requests.to_csv(run_dir / "requests.csv", index=False)
    summary = analyze(run_dir)
    ok = requests[requests.ok == 1]
    assert summary.table.retrieval_n.sum() > 0
    assert summary.table.retrieval_max.max() <= ok.retrieval_ms.max()
    assert any(o.startswith("Retrieval took p50") for o in summary.observations)
    html = build_report([run_dir]).read_text()
    assert "Retrieval (RAG, before the request) (ms)" in html and "Retrieval vs generation (RAG)" in html
