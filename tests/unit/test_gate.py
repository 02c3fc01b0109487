"""The regression gate (`vlab compare`): rule parsing, verdicts from intervals, exit codes and JUnit XML on the
recorded runs in tests/fixtures/runs and on synthetic repeated runs."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from analysis.gate import FAIL, NOISE, PASS, Estimate, judge, parse_rule
from analysis.level_metrics import METRICS
from tests.support.cli import run_vlab
from vlab.core.errors import ConfigError
from vlab.core.stats import Interval
from vlab.testing.synth import SynthSpec, make_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
CLOSED, CLOSED_B = str(FIXTURES / "closed"), str(FIXTURES / "closed-b")


# ------------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "kind", "amount", "canonical"),
    [
        ("ttft_p99 > +10%", "relative", 0.10, "ttft_p99 > +10%"),
        ("output_tok_s<-5%", "relative", -0.05, "output_tok_s < -5%"),
        ("  itl_p50 > +2.5ms ", "change", 2.5, "itl_p50 > +2.5ms"),
        ("error_rate > 0.01", "limit", 0.01, "error_rate > 0.01"),
        ("e2e_p90 > 800ms", "limit", 800.0, "e2e_p90 > 800ms"),
        ("req_s < .5", "limit", 0.5, "req_s < .5"),
    ],
)
def test_rules_parse(text: str, kind: str, amount: float, canonical: str) -> None:
    rule = parse_rule(text)
    assert (rule.kind, rule.text) == (kind, canonical)
    assert rule.amount == pytest.approx(amount)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ttft_p99 >> 10%", "expected METRIC > THRESHOLD"),
        ("ttft_p99 >= +10%", "expected METRIC > THRESHOLD"),
        ("ttft_p99 > ten", "expected METRIC > THRESHOLD"),
        ("", "expected METRIC > THRESHOLD"),
        ("ttft_p99 > +10% extra", "expected METRIC > THRESHOLD"),
        ("ttft_p999 > +10%", "unknown metric 'ttft_p999' (known: ttft_p50"),
        ("ttft_p99 > 10%", "a relative change needs its sign: +10% or -10%"),
        ("ttft_p99 > +10s", "unit 's' for ttft_p99, whose unit is 'ms' or none"),
        ("error_rate > 1ms", "unit 'ms' for error_rate, whose unit is none (it is a fraction)"),
    ],
)
def test_bad_rules_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rule(text)
    assert says in str(exc.value) and repr(text) in str(exc.value)


# ------------------------------------------------------------------------------------------------ verdicts
def _est(value: float, lo: float, hi: float, runs: int = 1) -> Estimate:
    return Estimate(Interval(value, lo, hi), runs, True)


def test_a_rule_fails_only_when_the_intervals_support_it() -> None:
    rule = parse_rule("ttft_p99 > +10%")
    lm = METRICS["ttft_p99"]
    base = _est(100.0, 95.0, 105.0)  # threshold from the point: 110; from the high end: 115.5
    assert judge(rule, lm, 4, False, base, _est(108.0, 100.0, 116.0)).verdict == PASS
    assert judge(rule, lm, 4, False, base, _est(120.0, 115.0, 125.0)).verdict == NOISE  # 115 ≤ 115.5
    failed = judge(rule, lm, 4, False, base, _est(120.0, 116.0, 125.0))
    assert failed.verdict == FAIL and failed.failed
    assert "held to 110 ms" in failed.reason and "past 115.5 ms" in failed.reason


def test_lower_is_worse_rules_use_the_other_ends() -> None:
    rule = parse_rule("output_tok_s < -5%")
    lm = METRICS["output_tok_s"]
    base = _est(100.0, 90.0, 110.0)  # threshold 95 from the point, 85.5 from the low end
    assert judge(rule, lm, 4, False, base, _est(96.0, 80.0, 110.0)).verdict == PASS
    assert judge(rule, lm, 4, False, base, _est(90.0, 80.0, 86.0)).verdict == NOISE
    assert judge(rule, lm, 4, False, base, _est(80.0, 75.0, 85.0)).verdict == FAIL


def test_absolute_changes_and_limits() -> None:
    lm = METRICS["ttft_p50"]
    base = _est(100.0, 98.0, 102.0)
    change = parse_rule("ttft_p50 > +20ms")  # fails when C_lo − B_hi > 20
    assert judge(change, lm, 1, False, base, _est(125.0, 121.0, 130.0)).verdict == NOISE
    assert judge(change, lm, 1, False, base, _est(125.0, 123.0, 130.0)).verdict == FAIL
    limit = parse_rule("error_rate > 0.01")  # a limit on the candidate alone: no baseline needed
    er = METRICS["error_rate"]
    nan = Estimate(Interval(math.nan, math.nan, math.nan), 1, False)
    assert judge(limit, er, 1, False, nan, _est(0.03, 0.015, 0.06)).verdict == FAIL
    assert judge(limit, er, 1, False, nan, _est(0.03, 0.005, 0.06)).verdict == NOISE


def test_a_side_without_a_value_fails_as_no_data() -> None:
    rule = parse_rule("ttft_p99 > +10%")
    nan = Estimate(Interval(math.nan, math.nan, math.nan), 1, False)
    check = judge(rule, METRICS["ttft_p99"], 2, False, _est(100.0, 90.0, 110.0), nan)
    assert check.failed and "the candidate has no value" in check.reason


# -------------------------------------------------------------------------------------------- the command
def test_the_recorded_runs_break_one_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "ci" / "gate.xml"
    code, out, err = run_vlab("compare", CLOSED, CLOSED_B, "--fail-if", "ttft_p99 > +10%",
                              "--fail-if", "output_tok_s < -5%", "--junit", str(junit), capsys=capsys)  # fmt: skip
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[2].split() == ["level", "metric", "baseline", "[95%]", "candidate", "[95%]", "change", "rule",
                                "verdict"]  # fmt: skip
    rows = [line for line in lines if " users " in line or " user " in line]
    assert len(rows) == 8  # 2 rules × 4 levels
    # closed-b saturates at 2 users: at 8 users it delivers 19.4 tok/s against 56.1, far outside both intervals
    assert [r for r in rows if r.endswith("FAIL")] == [r for r in rows if r.startswith("8 users") and "output" in r]
    assert "compare: 1 of 8 checks failed" in out
    assert "FAIL: output_tok_s at 8 users" in err

    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and suites.get("tests") == "8" and suites.get("failures") == "1"
    cases = suites.findall("testsuite/testcase")
    assert len(cases) == 8
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["output_tok_s < -5% @ 8 users"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.get("type") == FAIL
    assert "19.43" in failure.get("message", "") and "56.14" in failure.get("message", "")


def test_a_run_against_itself_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "gate.yaml"
    rules.write_text('rules:\n  - "ttft_p99 > +10%"\n  - "output_tok_s < -5%"\n  - "error_rate > 0.2"\n')
    junit = tmp_path / "gate.xml"
    code, out, _ = run_vlab("compare", CLOSED, CLOSED, "--rules", str(rules), "--junit", str(junit), capsys=capsys)
    assert code == 0, out
    assert "compare: all 12 hold" in out
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_without_rules_only_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_vlab("compare", CLOSED, CLOSED_B, "--level", "4", capsys=capsys)
    assert code == 0
    assert "nothing judged" in out and "ttft_p99 (ms)" in out and "8 users" not in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fail-if", "ttft_p99 >> 10%"], "rule 'ttft_p99 >> 10%': expected METRIC > THRESHOLD"),
        (["--fail-if", "tft_p99 > +10%"], "unknown metric 'tft_p99'"),
        (["--level", "3"], "--level 3: not a level of every run (levels all runs share: 1, 2, 4, 8)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_vlab("compare", CLOSED, CLOSED_B, *args, capsys=capsys)
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_folders_and_rules_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_vlab("compare", CLOSED, str(tmp_path / "nope"), "--fail-if", "ttft_p99 > +10%", capsys=capsys)
    assert code == 2 and "nope: no such run folder" in err
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [ttft_p99 > 10%]\n")
    code, _, err = run_vlab("compare", CLOSED, CLOSED_B, "--rules", str(bad), capsys=capsys)
    assert code == 2 and f"{bad}: rule 'ttft_p99 > 10%': a relative change needs its sign" in err
    bad.write_text("rule: [ttft_p99 > +10%]\n")
    code, _, err = run_vlab("compare", CLOSED, CLOSED_B, "--rules", str(bad), capsys=capsys)
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    code, _, err = run_vlab("compare", CLOSED, FIXTURES.as_posix() + "/open", "--fail-if", "req_s < -5%",
                            capsys=capsys)  # fmt: skip
    assert code == 2 and "mix closed-loop (users) and open-loop (req/s)" in err


# ---------------------------------------------------------------------------------------- repeated runs
def _runs(folder: Path, n: int, scale: float, seed0: int) -> Path:
    for k in range(n):
        make_run(folder / f"r{k + 1}", SynthSpec(targets=[1, 4], duration_s=20, latency_scale=scale, seed=seed0 + k,
                                                 error_fraction=0.0, name="gate"))  # fmt: skip
    return folder


def test_repeated_runs_judge_with_t_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _runs(tmp_path / "base", 3, 1.0, 10)
    same = _runs(tmp_path / "same", 3, 1.0, 20)  # the same server, other random draws: noise only
    slow = _runs(tmp_path / "slow", 3, 1.5, 30)  # every time the server takes × 1.5
    rule = ["--fail-if", "ttft_p50 > +10%", "--fail-if", "tpot_mean > +10%"]
    code, out, _ = run_vlab("compare", str(base), str(same), *rule, capsys=capsys)
    assert code == 0, out
    assert "baseline: " in out and "(t intervals across 3 runs)" in out
    code, out, _ = run_vlab("compare", "--baseline", *(str(base / f"r{k}") for k in (1, 2, 3)),
                            "--candidate", str(slow), *rule, capsys=capsys)  # fmt: skip
    assert code == 1, out
    assert out.count("FAIL") == 4  # both rules at both levels: +50% is far past +10% with 3 runs a side
