"""The Pareto front on known points, the points of recorded runs, and the view in the comparison report."""

from __future__ import annotations

import math
from pathlib import Path

from analysis.pareto import ParetoPoint, config_labels, pareto_context, pareto_front, points
from analysis.pipeline import analyze
from analysis.report import build_report


def _p(config: str, target: float, throughput: float, per_user: float) -> ParetoPoint:
    return ParetoPoint(config=config, target=target, throughput=throughput, per_user=per_user, n=40)


def test_front_of_known_points() -> None:
    pts = [
        _p("a", 1, 10.0, 50.0),  # the fastest per user: on the front
        _p("a", 4, 30.0, 40.0),  # on the front
        _p("a", 16, 60.0, 20.0),  # on the front
        _p("b", 1, 9.0, 45.0),  # beaten by a@1 on both
        _p("b", 4, 30.0, 35.0),  # same throughput as a@4, slower per user: dominated
        _p("b", 16, 70.0, 10.0),  # the most throughput: on the front
        _p("b", 32, 65.0, 5.0),  # beaten by b@16 on both
        _p("c", 2, math.nan, 60.0),  # no coordinate: no point
    ]
    front = pareto_front(pts)
    assert [p.label for p in front] == ["a @ 1 user", "a @ 4 users", "a @ 16 users", "b @ 16 users"]
    assert [p.throughput for p in front] == sorted(p.throughput for p in front)
    assert all(not q.dominates(p) for p in front for q in pts)
    assert pts[4].label == "b @ 4 users" and pts[1].dominates(pts[4]) and not pts[4].dominates(pts[1])


def test_ties_are_all_on_the_front() -> None:
    a, b = _p("a", 4, 30.0, 40.0), _p("b", 4, 30.0, 40.0)
    assert not a.dominates(b) and pareto_front([a, b, _p("c", 1, 20.0, 30.0)]) == [a, b]
    assert pareto_front([]) == []


def test_points_and_labels_of_recorded_runs(run_copy) -> None:
    closed, closed_b = analyze(run_copy("closed")), analyze(run_copy("closed-b"))
    assert config_labels([closed, closed_b]) == ["cpu-smollm2", "cpu-smollm2-noprefix"]  # the profiles differ
    assert config_labels([closed, closed]) == ["1: closed", "2: closed"]  # same profile, same folder name
    pts = points([closed, closed_b])
    assert len(pts) == 8
    row = closed.table.set_index("target").loc[4.0]
    p = next(p for p in pts if p.config == "cpu-smollm2" and p.target == 4)
    assert p.throughput == float(row["output_tok_per_s"])
    assert p.per_user == 1000.0 / float(row["tpot_mean"])
    ctx = pareto_context([closed, closed_b])
    assert ctx["available"] and ctx["figure"].startswith("data:image/png;base64,")
    on = {r["p"].label for r in ctx["rows"] if r["front"]}
    assert on == {p.label for p in ctx["front"]}
    for r in ctx["rows"]:
        if not r["front"]:
            assert r["dominated_by"] in on


def test_the_comparison_report_has_the_view(run_copy, tmp_path: Path) -> None:
    out = build_report([run_copy("closed"), run_copy("closed-b")], tmp_path / "compare.html")
    page = out.read_text()
    assert 'id="pareto"' in page and 'id="pareto-front-table"' in page
    assert "cpu-smollm2-noprefix" in page.split('id="pareto-front-table"')[1].split("</table>")[0]
