"""Locust's own flags with a scenario, each against the real local vLLM (vlab/locust/options.py decides per flag):
`-u/-t` replace the stages by one level, `-t` alone ends the run, `-r` is the spawn rate, `-u` on an open-loop
scenario is refused in one line, `--csv`/`--html` write where Locust users expect, every headless run writes the whole
run folder and its report, `--autostart` runs the levels with the web UI up, `--processes 2` records on the master,
`--set` overrides are checked like the YAML, and a used `--run-dir` is refused unless `--overwrite`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.support.cli import locust_cmd
from vlab.client.http import find_free_port
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import LEVELS_CSV, REPORT_HTML, REQUESTS_CSV, read_run_json

pytestmark = pytest.mark.e2e

# Three stages that would take 30 s: a flag that is ignored shows up as a long run with 1, 2 and 3 users.
STAGED = """name: flags
load:
  stages:
    - {users: 1, duration: 10s}
    - {users: 2, duration: 10s}
    - {users: 3, duration: 10s}
data: {prompt_tokens: 40, output_tokens: 8}
"""
OPEN = "name: open\nload: {rate: 2, duration: 4s}\ndata: {prompt_tokens: 40, output_tokens: 8}\n"


def locust(tmp_path: Path, host: str, *args: str, scenario: str = STAGED, timeout: float = 120):
    """Run `locust -f locustfiles/llm.py --scenario S --host H ARGS`; returns (exit code, output, run folder)."""
    path = tmp_path / "scenario.yaml"
    path.write_text(scenario)
    run_dir = tmp_path / "run"
    cmd = locust_cmd(path, host)
    if "--run-dir" not in args:
        cmd += ["--run-dir", str(run_dir)]
    out = subprocess.run([*cmd, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr, run_dir


def levels(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / LEVELS_CSV)


def test_u_and_t_make_one_level_and_the_run_folder_is_whole(vllm_base_url: str, tmp_path: Path) -> None:
    code, out, run_dir = locust(tmp_path, vllm_base_url, "--headless", "-u", "2", "-t", "4s")
    assert code == 0, out[-2000:]
    meta = read_run_json(run_dir)
    assert meta["scenario"]["load"]["stages"] == [{"users": 2, "duration": 4.0, **_stage_defaults(meta)}]
    assert levels(run_dir).target.tolist() == [2]  # one level, not the scenario's three
    for name in (REQUESTS_CSV, "tokens.csv", "locust_stats.csv", "locust_stats_history.csv", REPORT_HTML):
        assert (run_dir / name).exists(), name  # a plain headless run writes Locust's CSVs and the report too
    assert (pd.read_csv(run_dir / REQUESTS_CSV).ok == 1).sum() >= 2


def _stage_defaults(meta: dict) -> dict:
    """The keys the strict model fills in for a stage (kept out of the test's literal)."""
    stage = meta["scenario"]["load"]["stages"][0]
    return {k: v for k, v in stage.items() if k not in ("users", "duration")}


def test_t_alone_ends_the_run_early_and_completed(vllm_base_url: str, tmp_path: Path) -> None:
    code, out, run_dir = locust(tmp_path, vllm_base_url, "--headless", "-t", "5s")
    assert code == 0, out[-2000:]
    meta = read_run_json(run_dir)
    assert meta["status"] == "completed"
    lv = levels(run_dir)
    assert lv.target.tolist() == [1]  # the first 10 s stage was in force when 5 s ran out, and it ended there:
    assert lv.end_s[0] - lv.start_s[0] < 10  # before its own 10 s (a slow machine only delays the start)


def test_r_is_the_spawn_rate_of_a_rising_level(vllm_base_url: str, tmp_path: Path) -> None:
    rising = STAGED.replace("- {users: 1, duration: 10s}", "- {users: 1, duration: 2s}").replace(
        "- {users: 2, duration: 10s}\n    - {users: 3, duration: 10s}", "- {users: 3, duration: 4s}"
    )
    code, out, run_dir = locust(tmp_path, vllm_base_url, "--headless", "-r", "0.8", scenario=rising)
    assert code == 0, out[-2000:]
    assert read_run_json(run_dir)["scenario"]["load"]["spawn_rate"] == 0.8
    # the second level waits for its two new users, started 1.25 s apart, and then starts with all three at once (see
    # vlab/locust/shape.py); a busy machine can only make the wait longer, never shorter
    lv = levels(run_dir)
    assert lv.target.tolist() == [1, 3] and lv.start_s[1] - lv.end_s[0] > 1.0, lv
    first_sends = pd.read_csv(run_dir / REQUESTS_CSV).query("level == 1").groupby("user").t_start_s.min()
    assert len(first_sends) == 3 and first_sends.min() >= lv.start_s[1]


def test_u_on_an_open_loop_scenario_is_refused_in_one_line(vllm_base_url: str, tmp_path: Path) -> None:
    code, out, run_dir = locust(tmp_path, vllm_base_url, "--headless", "-u", "4", scenario=OPEN)
    assert code == 2
    refusal = [line for line in out.splitlines() if "-u 4" in line]
    assert refusal and "open-loop" in refusal[0] and "--set load.stages.0.rate=R" in refusal[0]
    assert "Traceback" not in out
    assert not (run_dir / REQUESTS_CSV).exists()


def test_csv_and_html_write_where_locust_users_expect(vllm_base_url: str, tmp_path: Path) -> None:
    prefix, html = tmp_path / "mine", tmp_path / "locust.html"
    code, out, run_dir = locust(
        tmp_path, vllm_base_url, "--headless", "-u", "1", "-t", "3s", "--csv", str(prefix), "--html", str(html)
    )
    assert code == 0, out[-2000:]
    assert (tmp_path / "mine_stats.csv").exists() and (tmp_path / "mine_stats_history.csv").exists()
    assert html.exists() and "locust" in html.read_text().lower()
    assert (run_dir / REPORT_HTML).exists()  # the suite's report as well


def test_set_overrides_are_checked_like_the_yaml(vllm_base_url: str, tmp_path: Path) -> None:
    code, out, run_dir = locust(
        tmp_path, vllm_base_url, "--headless", "-u", "1", "-t", "3s", "--set", "data.output_tokens=5", "--no-report"
    )
    assert code == 0, out[-2000:]
    assert read_run_json(run_dir)["scenario"]["data"]["output_tokens"]["value"] == 5
    assert (pd.read_csv(run_dir / REQUESTS_CSV).query("ok == 1").completion_tokens == 5).all()
    (tmp_path / "bad").mkdir()
    code, out, _ = locust(tmp_path / "bad", vllm_base_url, "--headless", "--set", "data.output_tokns=5")
    assert code == 2 and "output_tokns" in out and "output_tokens" in out and "Traceback" not in out


def test_autostart_runs_the_levels_with_the_web_ui(vllm_base_url: str, tmp_path: Path) -> None:
    port = str(find_free_port())
    short = STAGED.replace("duration: 10s", "duration: 2s")
    code, out, run_dir = locust(
        tmp_path, vllm_base_url, "--autostart", "--autoquit", "0", "--web-host", "127.0.0.1", "--web-port", port,
        scenario=short,
    )  # fmt: skip
    assert code == 0, out[-2000:]
    assert levels(run_dir).target.tolist() == [1, 2, 3]
    assert read_run_json(run_dir)["status"] == "completed"


def test_processes_2_records_on_the_master(vllm_base_url: str, tmp_path: Path) -> None:
    code, out, run_dir = locust(tmp_path, vllm_base_url, "--headless", "--processes", "2", "-u", "2", "-t", "5s")
    assert code == 0, out[-2000:]
    requests = pd.read_csv(run_dir / REQUESTS_CSV)
    assert requests.request_id.is_unique and (requests.ok == 1).sum() >= 2
    assert requests.node.nunique() == 2  # both worker processes sent, the master wrote


def test_a_used_run_dir_is_refused_then_overwritten_whole(vllm_base_url: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("--headless", "-u", "1", "-t", "3s", "--no-report", "--run-dir", str(run_dir))
    code, out, _ = locust(tmp_path, vllm_base_url, *args)
    assert code == 0, out[-2000:]
    first = read_run_json(run_dir)["started_at"]
    (run_dir / "stale-note.txt").write_text("from the earlier run")
    code, out, _ = locust(tmp_path, vllm_base_url, *args)
    assert code == 2 and "already holds a run" in out and "--overwrite" in out and "Traceback" not in out
    assert read_run_json(run_dir)["started_at"] == first  # refused before anything was touched
    code, out, _ = locust(tmp_path, vllm_base_url, *args, "--overwrite")
    assert code == 0, out[-2000:]
    assert read_run_json(run_dir)["started_at"] > first and not (run_dir / "stale-note.txt").exists()
