"""`vlab report`: numbers checked against values computed here independently (csv module + numpy), error cases,
escaping, summary files, comparison, and a headless-chromium rendering check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vlab.commands.cli import main
from vlab.core.paths import REPO_ROOT

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
ARTIFACTS = REPO_ROOT / "test-artifacts"


# ------------------------------------------------------------------------------------------ independent reference
def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _f(text: str) -> float:
    return float(text) if text != "" else float("nan")


def expected_levels(run: Path, windows: dict[int, float]) -> dict[int, dict[str, float]]:
    """Per level: measured-request percentiles, pooled ITL p50/p99, throughput, errors, from the raw CSVs, given each
    level's steady-state start (`windows`, from the report: how it is found is tested in test_stats.py)."""
    meta = json.loads((run / "run.json").read_text())
    warm, cool = meta["scenario"]["load"]["warmup_s"], meta["scenario"]["load"]["cooldown_s"]
    reqs = _rows(run / "requests.csv")
    by_id = {r["request_id"]: r for r in reqs}
    tokens: dict[str, list[float]] = {}
    for row in _rows(run / "tokens.csv"):
        tokens.setdefault(row["request_id"], []).append(float(row["t_ms"]))
    out = {}
    for lv in _rows(run / "levels.csv"):
        level = int(lv["level"])
        lo, hi = windows[level], float(lv["end_s"]) - cool
        assert lo >= float(lv["start_s"]) + warm
        mine = [r for r in reqs if int(r["level"]) == level]
        measured = [r for r in mine if r["ok"] == "1" and lo <= float(r["t_start_s"]) <= hi]
        ends = [r for r in reqs if r["ok"] == "1" and lo <= float(r["t_start_s"]) + float(r["e2e_ms"]) / 1000 <= hi]
        gaps = [g for r in measured for g in np.diff(tokens.get(r["request_id"], []))]
        received = 0.0  # output tokens whose event arrived inside the window, whichever level sent them
        for rid, times in tokens.items():
            r = by_id[rid]
            per_event = max(1.0, int(r["completion_tokens"]) / len(times)) if int(r["completion_tokens"]) > 0 else 1.0
            received += per_event * sum(lo <= float(r["t_start_s"]) + t / 1000 <= hi for t in times)
        ttft = np.array([_f(r["ttft_ms"]) for r in measured])
        e2e = np.array([_f(r["e2e_ms"]) for r in measured])
        out[level] = {
            "n_measured": len(measured),
            "ttft_p50": float(np.percentile(ttft, 50)),
            "ttft_p99": float(np.percentile(ttft, 99)),
            "e2e_p90": float(np.percentile(e2e, 90)),
            "itl_p50": float(np.percentile(gaps, 50)),
            "itl_p99": float(np.percentile(gaps, 99)),
            "itl_n": len(gaps),
            "req_per_s": len(ends) / (hi - lo),
            "output_tok_per_s": received / (hi - lo),
            "n_failed": sum(r["ok"] == "0" and r["error_kind"] not in ("cut_off", "rate_limited") for r in mine),
            "n_cut_off": sum(r["error_kind"] == "cut_off" for r in mine),
            "prompt_mismatch": sum(int(r["prompt_tokens"]) != int(r["prompt_tokens_requested"]) for r in measured),
        }
    return out


def _windows(run: Path) -> dict[int, float]:
    summary = json.loads((run / "summary.json").read_text())
    return {int(lv["level"]): float(lv["window_start_s"]) for lv in summary["levels"]}


# ------------------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("name", ["closed", "open", "smoke-real"])
def test_summary_numbers_match_independent_computation(run_copy, capsys, name: str) -> None:
    run = run_copy(name)
    assert main(["report", str(run)]) == 0
    assert (run / "index.html").is_file()
    summary = json.loads((run / "summary.json").read_text())
    table = {int(r["level"]): r for r in _rows(run / "summary.csv")}
    for level, exp in expected_levels(run, _windows(run)).items():
        got = next(lv for lv in summary["levels"] if lv["level"] == level)
        assert got["n_measured"] == exp["n_measured"]
        assert got["n_failed"] == exp["n_failed"] and got["n_cut_off"] == exp["n_cut_off"]
        assert got["prompt_mismatch"] == exp["prompt_mismatch"]
        assert got["itl_n"] == exp["itl_n"]
        for key in ("ttft_p50", "ttft_p99", "e2e_p90", "req_per_s"):
            assert got[key] == pytest.approx(exp[key], rel=1e-9), key
            assert float(table[level][key]) == pytest.approx(exp[key], rel=1e-5), key
        # token arrivals are binned (BIN_S): the window's edges move by at most half a bin
        assert got["output_tok_per_s"] == pytest.approx(exp["output_tok_per_s"], rel=0.01), "output_tok_per_s"
        lo, hi = got["output_tok_per_s_lo"], got["output_tok_per_s_hi"]
        assert lo is None or lo <= got["output_tok_per_s"] <= hi
        for key in ("ttft_p50", "ttft_p99", "e2e_p90"):
            ci = (got.get(f"{key}_lo"), got.get(f"{key}_hi"))
            if ci[0] is not None:
                assert ci[0] <= got[key] <= ci[1], key
        for key in ("itl_p50", "itl_p99"):  # tokens are read as float32
            assert got[key] == pytest.approx(exp[key], abs=0.01), key
    assert "report:" in capsys.readouterr().out


def test_html_sections_and_values(run_copy) -> None:
    run = run_copy("closed")
    assert main(["report", str(run)]) == 0
    html = (run / "index.html").read_text()
    for section in ('id="run"', 'id="headline"', 'id="observations"', 'id="plots"', 'id="levels"', 'id="errors"'):
        assert section in html
    for table in ("pct-ttft", "pct-e2e", "pct-tpot", "pct-itl", "pct-itl_mean", "pct-queue_wait", "errors-table"):
        assert f'id="{table}"' in html
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html.replace("http://127.0.0.1:8000", "")  # nothing fetched from the network
    from analysis.report import fmt_num

    summary = json.loads((run / "summary.json").read_text())
    exp = expected_levels(run, _windows(run))
    assert f"<td>{fmt_num(exp[0]['ttft_p50'], 4)} <span" in html
    best = max(lv["output_tok_per_s"] for lv in summary["levels"])
    assert summary["headline"]["max_output_tps"] == pytest.approx(best)
    assert summary["observations"] and "TTFT p50" in " ".join(summary["observations"])
    assert 'id="status-banner"' not in html
    assert 'id="scenario-yaml"' in html and "prompt_tokens:" in html  # the configuration as YAML
    assert "FixedLength(" not in html and "{'dist'" not in html  # never Python reprs
    assert 'id="command"' in html


def test_knee_and_slo_headline() -> None:
    import pandas as pd

    from analysis.summary import find_knee, headline

    def table(n: int, ttft: list[float], half_width: float) -> pd.DataFrame:
        tps = [100.0, 190.0, 200.0, 205.0]
        return pd.DataFrame(
            {
                "level": [0, 1, 2, 3],
                "target": [1, 2, 4, 8],
                "n_measured": [n] * 4,
                "slo_n": [n] * 4,
                "output_tok_per_s": tps,
                "output_tok_per_s_lo": [v - 2 for v in tps],
                "output_tok_per_s_hi": [v + 2 for v in tps],
                "ttft_p50": ttft,
                "ttft_p50_lo": [v - half_width for v in ttft],
                "ttft_p50_hi": [v + half_width for v in ttft],
                "e2e_p50": [500.0, 520.0, 700.0, 1200.0],
                "e2e_p50_lo": [500.0, 520.0, 700.0, 1200.0],
                "e2e_p50_hi": [500.0, 520.0, 700.0, 1200.0],
                "slo_fraction": [1.0, 0.95, 0.5, 0.1],
                "goodput_req_per_s": [1.0, 1.9, 1.0, 0.2],
            }
        )

    ttft = [50.0, 60.0, 200.0, 400.0]
    assert find_knee(table(100, ttft, 5.0)) == (1, True)  # 190 → 200 is +5 % while TTFT p50 grows 3.3x, beyond its CI
    h = headline(table(100, ttft, 5.0), slo_set=True)
    assert (h.knee_target, h.best_slo_target, h.best_slo_goodput_rps, h.best_slo_n) == (2.0, 2.0, 1.9, 100)
    assert h.max_output_tps == 205.0 and h.max_output_tps_distinct  # 205 ± 2 against 200 ± 2
    # the same growth on 5 requests a level, or with intervals that overlap: no knee is named
    assert find_knee(table(5, ttft, 5.0)) == (None, False)
    assert headline(table(5, ttft, 5.0), slo_set=True).best_slo_target is None
    e2e_flat = table(100, ttft, 200.0)
    e2e_flat["e2e_p50"] = e2e_flat["e2e_p50_lo"] = e2e_flat["e2e_p50_hi"] = 500.0
    assert find_knee(e2e_flat) == (None, False)
    rising = table(100, ttft, 5.0)
    rising["output_tok_per_s"] = [100.0, 200.0, 400.0, 800.0]
    assert find_knee(rising) == (None, True)


def test_open_loop_columns_and_interrupted_banner(run_copy) -> None:
    run = run_copy("open")
    assert main(["report", str(run)]) == 0
    html = (run / "index.html").read_text()
    assert 'id="status-banner"' in html and "interrupted" in html
    meta = json.loads((run / "run.json").read_text())
    cool = meta["scenario"]["load"]["cooldown_s"]
    reqs = _rows(run / "requests.csv")
    summary = json.loads((run / "summary.json").read_text())
    windows = _windows(run)
    for lv in _rows(run / "levels.csv"):
        lo, hi = windows[int(lv["level"])], float(lv["end_s"]) - cool
        arrivals = [
            r
            for r in reqs
            if int(r["level"]) == int(lv["level"])
            and lo <= float(r["t_start_s"]) - float(r["queue_wait_ms"]) / 1000 <= hi
        ]
        got = next(x for x in summary["levels"] if x["level"] == int(lv["level"]))
        assert got["achieved_rate"] == pytest.approx(len(arrivals) / (hi - lo))
        assert got["n_waited"] == sum(r["waited_for_slot"] == "1" for r in arrivals)
        assert got["target_rate"] == float(lv["target"])


def test_script_payload_is_escaped(run_copy) -> None:
    run = run_copy("closed")
    assert main(["report", str(run)]) == 0
    html = (run / "index.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html


def test_raw_files_untouched(run_copy) -> None:
    run = run_copy("closed")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["report", str(run)]) == 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in before} == before
    assert {p.name for p in run.iterdir()} - set(before) == {"index.html", "summary.csv", "summary.json"}


def test_output_option(run_copy, tmp_path: Path) -> None:
    run = run_copy("smoke-real")
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert out.is_file() and (out.parent / "summary.json").is_file()
    assert not (run / "index.html").exists()


def test_comparison(run_copy, tmp_path: Path) -> None:
    a, b = run_copy("closed"), run_copy("closed-b")
    assert main(["report", str(a), str(b)]) == 0
    html = (a / "compare.html").read_text()
    assert 'id="compare-table"' in html and "cpu-smollm2-noprefix" in html
    assert "data:image/png;base64," in html
    from analysis.pipeline import analyze
    from analysis.report import comparison_rows, fmt_num

    sa, sb = analyze(a), analyze(b)
    rows = comparison_rows([sa, sb])
    first = rows[0]["metrics"][0]  # output tok/s at the first level
    ratio = sb.table["output_tok_per_s"].iat[0] / sa.table["output_tok_per_s"].iat[0]
    assert first["values"][1]["ratio"] == pytest.approx(ratio)
    assert f"<td>{fmt_num(ratio)}</td>" in html
    out = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0 and out.is_file()


# ------------------------------------------------------------------------------------------------------ errors
def _one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_folder(capsys, tmp_path: Path) -> None:
    _one_line_error(capsys, ["report", str(tmp_path / "nope")], "nope", "no such run folder")


def test_empty_run(run_copy, capsys) -> None:
    run = run_copy("closed")
    header = (run / "requests.csv").read_text().splitlines()[0]
    (run / "requests.csv").write_text(header + "\n")
    _one_line_error(capsys, ["report", str(run)], "requests.csv", "no requests")
    (run / "requests.csv").unlink()
    _one_line_error(capsys, ["report", str(run)], "requests.csv", "not found")


def test_truncated_last_line_still_works(run_copy, capsys) -> None:
    run = run_copy("closed")
    n_before = len(_rows(run / "requests.csv"))
    with (run / "requests.csv").open("a") as fh:
        fh.write("gen-99999,3,8.000,1,gen,chat,18000")
    with (run / "tokens.csv").open("a") as fh:
        fh.write("gen-0,8,12")
    assert main(["report", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert sum(lv["n_sent"] for lv in summary["levels"]) == n_before
    assert any("partial last line" in o for o in summary["observations"])


def test_corrupt_csv(run_copy, capsys) -> None:
    run = run_copy("closed")
    lines = (run / "requests.csv").read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",chat,", ",chat,not-a-number-", 1)
    (run / "requests.csv").write_text("".join(lines))
    _one_line_error(capsys, ["report", str(run)], "requests.csv", "row 4, column 't_start_s'")


def test_corrupt_tokens_csv(run_copy, capsys) -> None:
    run = run_copy("closed")
    with (run / "tokens.csv").open("a") as fh:
        fh.write("gen-1,x,oops\n")
    rows = len((run / "tokens.csv").read_text().splitlines())
    _one_line_error(capsys, ["report", str(run)], "tokens.csv", f"row {rows}, column 'i'")


@pytest.mark.parametrize("fmt", [0, None, 99])
def test_other_format(run_copy, capsys, fmt) -> None:
    run = run_copy("closed")
    meta = json.loads((run / "run.json").read_text())
    if fmt is None:
        del meta["format"]
    else:
        meta["format"] = fmt
    (run / "run.json").write_text(json.dumps(meta))
    _one_line_error(capsys, ["report", str(run)], "run.json", "records format")


def test_missing_run_json(run_copy, capsys) -> None:
    run = run_copy("closed")
    (run / "run.json").unlink()
    _one_line_error(capsys, ["report", str(run)], "run.json", "not found")


# ------------------------------------------------------------------------------------------------------ browser
