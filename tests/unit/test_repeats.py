"""Repeated runs: the Student t and Wilson intervals on known values, and the repeats summary's numbers against
each run's own per-level table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.pipeline import analyze
from analysis.repeats import format_repeats, summarize_repeats, write_repeats
from tests.support.cli import run_vlab
from vlab.core.stats import proportion_ci, t_mean_ci, t_quantile
from vlab.testing.synth import SynthSpec, make_run

# t(0.975, df) from the printed tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), to the 3 decimals they give
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 29: 2.045, 100: 1.984}


@pytest.mark.parametrize(("df", "expected"), sorted(T_975.items()))
def test_t_quantile_matches_the_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_matches_scipy_closely() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 8, 30, 31):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)


def test_t_mean_ci_by_hand() -> None:
    iv = t_mean_ci([10.0, 12.0, 14.0, 16.0, 18.0])  # mean 14, s = √10, half = 2.776·√10/√5 = 2.776·√2
    assert iv.value == 14.0
    assert iv.half_width == pytest.approx(t_quantile(0.975, 4) * math.sqrt(2.0))
    assert iv.lo == pytest.approx(14.0 - 3.9260, abs=1e-3) and iv.hi == pytest.approx(14.0 + 3.9260, abs=1e-3)
    one = t_mean_ci([5.0, math.nan])  # NaN dropped; one value has no interval
    assert one.value == 5.0 and not one.known
    assert t_mean_ci([3.0, 3.0, 3.0]).half_width == 0.0


def test_wilson_interval_by_hand() -> None:
    half = proportion_ci(5, 10)  # (0.5 + 0.19207) / 1.38415 ± 1.96·√(0.025 + 0.00960) / 1.38415
    assert (half.lo, half.hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    zero = proportion_ci(0, 10)
    assert zero.value == 0.0 and zero.lo == 0.0 and zero.hi == pytest.approx(0.2775, abs=1e-4)
    assert proportion_ci(10, 10).hi == 1.0 and not proportion_ci(0, 0).known


def _three_runs(folder: Path) -> list[Path]:
    return [
        make_run(folder / f"r{k}", SynthSpec(targets=[1, 4], duration_s=15, seed=k, name="rep", error_fraction=0.05))
        for k in (1, 2, 3)
    ]


def test_summary_is_the_t_interval_of_each_runs_value(tmp_path: Path) -> None:
    runs = _three_runs(tmp_path)
    summaries = [analyze(r) for r in runs]
    levels = summarize_repeats(summaries)
    assert [lv.target for lv in levels] == [1.0, 4.0]
    for lv in levels:
        by_name = {st.metric.name: st for st in lv.stats}
        tables = [s.table.set_index("target").loc[lv.target] for s in summaries]
        for name, column in (("ttft_p99", "ttft_p99"), ("output_tok_s", "output_tok_per_s"), ("e2e_mean", "e2e_mean")):
            values = [float(t[column]) for t in tables]
            st = by_name[name]
            assert list(st.values) == pytest.approx(values)
            mean, s = sum(values) / 3, pd.Series(values).std(ddof=1)
            assert st.interval.value == pytest.approx(mean)
            assert st.interval.half_width == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-6)
            assert st.cv == pytest.approx(s / mean)
        errors = [int(t["n_failed"]) / (int(t["n_failed"]) + int(t["n_ok"])) for t in tables]
        assert list(by_name["error_rate"].values) == pytest.approx(errors)
    text = format_repeats(levels, open_loop=False)
    assert text.splitlines()[1].split()[:2] == ["1", "user"] and "±" in text


def test_files_and_the_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _three_runs(tmp_path)
    code, out, _ = run_vlab("report", str(tmp_path), capsys=capsys)
    assert code == 0 and f"report: {tmp_path / 'index.html'}" in out
    doc = json.loads((tmp_path / "repeats.json").read_text())
    assert [r["run"] for r in doc["runs"]] == ["r1", "r2", "r3"]
    ttft = doc["levels"][1]["metrics"]["ttft_p50"]
    assert ttft["n"] == 3 and ttft["ci_lo"] < ttft["mean"] < ttft["ci_hi"]
    csv = pd.read_csv(tmp_path / "repeats.csv")
    row = csv[(csv.target == 4) & (csv.metric == "ttft_p50")].iloc[0]
    assert row["mean"] == pytest.approx(ttft["mean"], rel=1e-5) and list(csv.columns)[-3:] == ["r1", "r2", "r3"]
    page = (tmp_path / "index.html").read_text()
    assert 'id="repeat-headline-table"' in page and "Repeated runs: rep" in page


def test_a_lost_run_counts_only_the_runs_that_have_the_level(tmp_path: Path) -> None:
    runs = _three_runs(tmp_path)
    short = make_run(tmp_path / "r4", SynthSpec(targets=[1], duration_s=15, seed=4, name="rep"))
    levels = summarize_repeats([analyze(r) for r in [*runs, short]])
    by_target = {lv.target: {st.metric.name: st for st in lv.stats} for lv in levels}
    assert by_target[1.0]["ttft_p50"].n == 4 and by_target[4.0]["ttft_p50"].n == 3
    write_repeats([analyze(r) for r in [*runs, short]], tmp_path)
    assert (tmp_path / "repeats.csv").exists()


def test_runs_of_other_configurations_are_flagged(run_copy, tmp_path: Path) -> None:
    folder = run_copy("closed").parent
    run_copy("closed-b")  # the same scenario against another server profile: not repeats
    write_repeats([analyze(folder / "closed"), analyze(folder / "closed-b")], folder)
    page = (folder / "index.html").read_text()
    assert 'id="mixed-runs"' in page and "cpu-smollm2, cpu-smollm2-noprefix" in page
