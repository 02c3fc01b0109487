"""The matrix file (`vlab experiment matrix FILE`): its cells, their names and profiles, and one line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run_vlab
from vlab.commands.matrix import cell_profiles
from vlab.core.errors import ConfigError
from vlab.core.matrix import load_matrix
from vlab.core.paths import SCENARIOS_DIR


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(body)
    return path


def test_cells_cross_profiles_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, f"name: m\nscenario: {SCENARIOS_DIR / 'smoke.yaml'}\n"
                  "profiles: [cpu-smollm2, cpu-smollm2-noprefix]\n"
                  "overrides: {max_num_seqs: [2, 8], max_num_batched_tokens: [256, 1024]}\n")  # fmt: skip
    spec, scenario = load_matrix(path)
    assert scenario == SCENARIOS_DIR / "smoke.yaml"
    names = [c.name for c in spec.cells()]
    assert names[:4] == [
        "cpu-smollm2.max_num_seqs-2.max_num_batched_tokens-256",
        "cpu-smollm2.max_num_seqs-2.max_num_batched_tokens-1024",
        "cpu-smollm2.max_num_seqs-8.max_num_batched_tokens-256",
        "cpu-smollm2.max_num_seqs-8.max_num_batched_tokens-1024",
    ]
    assert len(names) == 8 and names[4].startswith("cpu-smollm2-noprefix.")
    cells = cell_profiles(spec, path)
    cell, profile = cells[1]
    assert (profile.name, profile.max_num_seqs, profile.max_num_batched_tokens) == (cell.name, 2, 1024)
    assert profile.enable_prefix_caching and not cells[5][1].enable_prefix_caching  # the base profile's keys stay


def test_relative_paths_are_the_matrix_files(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("name: s\nload: {users: 1, duration: 2s}\n")
    (tmp_path / "p.yaml").write_text((Path("server/profiles/cpu-smollm2.yaml")).read_text().replace(
        "name: cpu-smollm2", "name: mine"))  # fmt: skip
    path = _write(
        tmp_path, "name: m\nscenario: s.yaml\nprofiles: [p.yaml]\noverrides: {enable_prefix_caching: [false]}\n"
    )
    spec, scenario = load_matrix(path)
    assert scenario == tmp_path / "s.yaml"
    [(cell, profile)] = cell_profiles(spec, path)
    assert cell.name == "p.enable_prefix_caching-false" and profile.name == cell.name


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("name: m\nscenario: s.yaml\n", "profiles: Field required"),
        ("name: m\nscenario: s.yaml\nprofiles: []\n", "profiles: List should have at least 1 item"),
        ("name: m\nscenario: s.yaml\nprofiles: [a]\nflags: {}\n", "flags: unknown key (expected: name, description"),
        ("name: m\nscenario: s.yaml\nprofiles: [a]\noverrides: {port: [1]}\n", "'port' cannot be overridden"),
        ("name: m\nscenario: s.yaml\nprofiles: [a]\noverrides: {max_num_seqs: []}\n", "'max_num_seqs': give at least"),
        ("name: m\nscenario: s.yaml\nprofiles: [a, a]\n", "cells repeat (a)"),
        ("name: m m\nscenario: s.yaml\nprofiles: [a]\n", "name: String should match pattern"),
        ("- a\n- b\n", "expected a mapping with name, scenario, profiles and overrides"),
    ],
)
def test_bad_matrix_files(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_matrix(_write(tmp_path, body))
    assert says in str(exc.value) and str(tmp_path / "m.yaml") in str(exc.value)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ("{max_num_seq: [2]}", "overrides: unknown profile key(s) max_num_seq (known: "),
        ("{max_num_seqs: [0]}", "cell cpu-smollm2.max_num_seqs-0: key 'max_num_seqs': Input should be greater than 0"),
        ("{enable_prefix_caching: [maybe]}", "key 'enable_prefix_caching': Input should be a valid boolean"),
    ],
)
def test_bad_overrides_fail_before_any_server(tmp_path: Path, overrides: str, says: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path = _write(tmp_path, f"name: m\nscenario: {SCENARIOS_DIR / 'smoke.yaml'}\nprofiles: [cpu-smollm2]\n"
                  f"overrides: {overrides}\n")  # fmt: skip
    code, _, err = run_vlab("experiment", "matrix", str(path), "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_usage_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_vlab("experiment", "matrix", capsys=capsys)
    assert code == 2 and "a matrix FILE goes with" in err
    code, _, err = run_vlab("experiment", "matrix", str(tmp_path / "none.yaml"), capsys=capsys)
    assert code == 2 and "matrix file not found" in err


def test_the_shipped_matrix_loads() -> None:
    path = SCENARIOS_DIR / "matrix" / "batch.yaml"
    spec, scenario = load_matrix(path)
    assert scenario == SCENARIOS_DIR / "matrix" / "loads.yaml" and scenario.is_file()
    assert [p.max_num_seqs for _, p in cell_profiles(spec, path)] == [2, 8]
