"""Scenario files: shorthands, distributions, and one clear line for every kind of mistake."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from vlab.core.arrivals import ARRIVAL_LAWS, stage_offsets
from vlab.core.errors import ConfigError
from vlab.core.paths import REPO_ROOT, SCENARIOS_DIR
from vlab.core.scenario import DEFAULT_CAP_S, Stage, load_scenario
from vlab.locust.workload import draw_length


@pytest.mark.parametrize("path", sorted(SCENARIOS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    load_scenario(path)


def test_shorthands(write_scenario) -> None:
    s = load_scenario(write_scenario("name: x\nload: {users: 4, duration: 1m}\ndata: {prompt_tokens: 100}\n"))
    assert s.load.stages[0].users == 4 and s.load.duration_s == 60.0 and not s.load.open_loop
    assert s.data.prompt_tokens.bounds() == (100, 100) and s.data.output_tokens.bounds() == (128, 128)
    s = load_scenario(write_scenario("name: x\nload: {rate: 2.5, duration: 500ms}\n"))
    assert s.load.open_loop and s.load.stages[0].target == 2.5 and s.load.duration_s == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nload: {users: 2, duration: 5}\nbogus: 1\n", "bogus: unknown key"),
        (
            "name: x\nload: {users: -2, duration: 5}\n",
            "load.stages[0].users: Input should be greater than or equal to 1",
        ),
        ("name: x\nload: {users: two, duration: 5}\n", "load.stages[0].users: Input should be a valid integer"),
        ("name: x\nload: {users: 2, duration: soon}\n", "load.stages[0].duration: expected a duration"),
        ("name: x\nload: {stages: [{users: 1, duration: 5}, {rate: 2, duration: 5}]}\n", "mix `users` and `rate`"),
        (
            "name: x\nload: {users: 2, duration: 5}\ndata: {prompt_tokens: {dist: uniform, min: 9, max: 3}}\n",
            "data.prompt_tokens: min (9) must not exceed max (3)",
        ),
        (
            "name: x\nload: {users: 2, duration: 5}\ndata: {dataset: {path: nowhere.jsonl}}\n",
            "data.dataset.path: file not found",
        ),
        ("name: x\nload: {users: 2, duration: 5}\n  oops: [\n", "YAML syntax error"),
        ("load: {users: 2, duration: 5}\n", "name: Field required"),
    ],
)
def test_bad_scenarios_give_one_line(write_scenario, text: str, expected: str) -> None:
    path = write_scenario(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_yaml_syntax_error_names_the_line(write_scenario) -> None:
    path = write_scenario("name: x\nload:\n  users: 2\n duration: 5\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_scenario(path)


def test_locust_with_a_bad_scenario_exits_2_without_traceback(write_scenario) -> None:
    path = write_scenario("name: x\nload: {users: 0, duration: 5}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfiles/llm.py"), "--scenario", str(path),
         "--headless"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "load.stages[0].users" in proc.stderr


def test_length_distributions_stay_in_bounds() -> None:
    s = load_scenario(SCENARIOS_DIR / "demo.yaml")
    rng = random.Random(1)
    from vlab.core.scenario import NormalLength, UniformLength

    uni = UniformLength(dist="uniform", min=10, max=20)
    draws = [draw_length(uni, rng) for _ in range(2000)]
    assert min(draws) == 10 and max(draws) == 20
    norm = NormalLength(dist="normal", mean=100, std=50, min=60, max=140)
    draws = [draw_length(norm, rng) for _ in range(2000)]
    assert min(draws) == 60 and max(draws) == 140 and 90 < sum(draws) / len(draws) < 110
    assert draw_length(s.data.output_tokens, rng) == 128


@pytest.mark.parametrize("process", ["constant", "poisson", "gamma"])
def test_stage_arrivals_hold_the_exact_count_and_the_law_shape(process: str) -> None:
    law = ARRIVAL_LAWS[process]()
    offsets = stage_offsets(law, rate=20.0, n=1200, rng=random.Random(3), burstiness=0.5)
    assert len(offsets) == 1200 and offsets[-1] == pytest.approx(60.0)
    gaps = [b - a for a, b in zip([0.0, *offsets[:-1]], offsets, strict=True)]
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    expected_cv = {"constant": 0.0, "poisson": 1.0, "gamma": 2**0.5}[process]  # gamma CV = 1/sqrt(shape)
    assert cv == pytest.approx(expected_cv, abs=0.12)


def test_stage_bounds_time_count_and_cap() -> None:
    timed = Stage(users=4, duration=20)
    assert (timed.min_s, timed.cap_s) == (20, 20)
    counted = Stage(users=4, requests=30)
    assert (counted.min_s, counted.cap_s) == (0, DEFAULT_CAP_S)
    both = Stage(users=4, duration=20, requests=30, max_duration=90)
    assert (both.min_s, both.cap_s) == (20, 90)
    assert Stage(rate=2, duration=30).arrivals() == 60 and Stage(rate=2, requests=7).arrivals() == 7
    with pytest.raises(ValueError, match="needs `duration`, `requests`, or both"):
        Stage(users=1)
    with pytest.raises(ValueError, match="shorter than duration"):
        Stage(users=1, duration=20, max_duration=10)


def test_unknown_arrival_law_is_refused(write_scenario) -> None:
    path = write_scenario("name: x\nload: {rate: 2, duration: 10s, arrival: {process: bursty}}\n")
    with pytest.raises(ConfigError, match="unknown arrival process 'bursty'"):
        load_scenario(path)


def test_dry_run_estimate_from_one_request() -> None:
    from vlab.commands.sweep import estimate_levels
    from vlab.core.scenario import parse_scenario

    sc = parse_scenario(
        {"name": "e", "load": {"stages": [{"users": 1, "requests": 30, "duration": 5},
                                          {"users": 10, "requests": 30, "duration": 5}]}},
        "e.yaml",
    )  # fmt: skip
    lines = estimate_levels(sc, request_s=2.0)
    # level 0: 30 requests x 2 s at 1 user = 60 s (+ one request's drain); level 1: max(5, 30 / 10 x 2) + 2 = 8 s
    assert lines[0].strip() == "level 0: ~62 s" and lines[1].strip() == "level 1: ~8 s"
    assert "~1.2 min" in lines[2]
