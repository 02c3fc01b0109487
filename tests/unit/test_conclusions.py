"""Issue 15's cases, each a real run recorded against the local vLLM (`tests/fixtures/runs/record_cases.py`): the
report gives the right numbers and no sentence the data does not support."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from analysis.pipeline import analyze
from analysis.report import build_report
from analysis.summary import RunSummary

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
UNSUPPORTED = re.compile(r"[Kk]nee (at|is)|rises [\d.]+x from|grows [\d.]+x from|waited for a free slot")


def _case(tmp_path: Path, name: str) -> tuple[RunSummary, str]:
    run = Path(shutil.copytree(RUNS / name, tmp_path / name))
    summary = analyze(run)
    html = build_report([run]).read_text()
    return summary, html


def _text(summary: RunSummary) -> str:
    return " ".join(summary.observations)


def test_a_level_shorter_than_its_requests(tmp_path: Path) -> None:
    summary, html = _case(tmp_path, "short-level")
    level = summary.table.iloc[0]
    assert level["n_sent"] > 0 and level["n_cut_off"] == level["n_sent"]  # every request outlived the level
    assert level["n_failed"] == 0 and level["n_measured"] == 0
    assert not (level["error_rate"] > 0)  # cut-off requests are never in an error rate (NaN: nothing ended)
    assert not (level["slo_fraction"] < 1)  # nor against the SLO
    text = _text(summary)
    assert "cut off): not failures, not measured" in text and "No request failed." in text
    assert "not enough data to tell" in text and not UNSUPPORTED.search(text)
    assert summary.headline.knee_target is None and summary.headline.best_slo_target is None
    assert 'id="status-banner"' in html and "every one was cut off" in html


def test_a_single_level_run_from_the_command_line(tmp_path: Path) -> None:
    # headless `locust -u 2 -t 12s`, no shape: the web UI's path, where the users given are the only level
    summary, html = _case(tmp_path, "single-level")
    assert len(summary.table) == 1 and summary.run.meta.status == "completed"
    text = _text(summary)
    assert "One load level only" in text and not UNSUPPORTED.search(text)
    assert summary.headline.knee_target is None
    assert "Knee" not in re.sub(r"<[^>]+>", " ", html).split("Observations")[0] or "not enough data" in html


def test_an_open_loop_run_with_idle_slots(tmp_path: Path) -> None:
    summary, _ = _case(tmp_path, "open-idle")
    requests = summary.run.requests
    assert not requests["waited_for_slot"].any()  # at most a few of 16 slots were ever busy
    level = summary.table.iloc[0]
    assert level["n_sent"] == len(requests) and level["achieved_rate"] > 0.5  # 1 req/s target, Poisson
    text = _text(summary)
    assert "dispatch lag" in text and "waited" not in text.replace("waited in the server", "")


def test_a_server_that_died(tmp_path: Path) -> None:
    summary, html = _case(tmp_path, "server-died")
    meta = summary.run.meta
    assert meta.status == "failed" and "most requests failed" in (meta.status_reason or "")
    level = summary.table.iloc[0]
    assert level["n_failed"] > level["n_ok"] and level["error_rate"] > 0.5
    # the users backed off from the error answers instead of recording thousands per second
    assert level["n_sent"] < 200
    assert 'id="status-banner"' in html and "failed" in html.split('id="status-banner"')[1][:400]


@pytest.mark.parametrize("name", ["short-level", "single-level", "open-idle", "server-died"])
def test_locust_counts_every_recorded_request_once(name: str) -> None:
    import csv

    import pandas as pd

    records = pd.read_csv(RUNS / name / "requests.csv")
    with (RUNS / name / "locust_stats.csv").open() as f:
        aggregated = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    ended = int((records["error_kind"].fillna("") != "cut_off").sum())
    assert int(aggregated["Request Count"]) == ended
