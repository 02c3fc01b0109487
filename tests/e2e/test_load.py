"""End to end against the real local vLLM: Locust streams, records, and the numbers hold together."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd
import pytest

from vlab.commands.runner import run_locust
from vlab.core.runfolder import LEVELS_CSV, REQUESTS_CSV, TOKENS_CSV, read_run_json
from vlab.core.scenario import load_scenario

pytestmark = pytest.mark.e2e


def run(scenario_path: Path, run_dir: Path, host: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    code = run_locust(load_scenario(scenario_path), scenario_path, run_dir, host=host)
    requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    tokens = pd.read_csv(run_dir / TOKENS_CSV)
    return requests, tokens, code


def locust_count(run_dir: Path, request_type: str) -> int:
    with (run_dir / "locust_stats.csv").open() as f:
        for row in csv.DictReader(f):
            if row["Type"] == request_type:
                return int(row["Request Count"])
    return 0


@pytest.fixture(scope="module")
def chat_run(vllm_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("chat")
    scenario = folder / "chat.yaml"
    scenario.write_text(
        "name: e2e-chat\napi: {endpoint: chat}\nload: {users: 3, duration: 10s}\n"
        "data: {prompt_tokens: {dist: uniform, min: 40, max: 120}, output_tokens: {dist: uniform, min: 8, max: 24}}\n"
    )
    requests, tokens, code = run(scenario, folder / "run", vllm_base_url)
    assert code == 0, (folder / "run" / "locust.log").read_text()[-3000:]
    return folder / "run", requests, tokens


def test_every_token_event_is_a_token(chat_run) -> None:
    _, requests, _ = chat_run
    ok = requests[requests.ok == 1]
    assert len(ok) >= 3
    assert (ok.n_events == ok.completion_tokens).all()
    assert not ok.multi_token.any()


def test_exact_prompt_and_output_lengths(chat_run) -> None:
    _, requests, _ = chat_run
    ok = requests[requests.ok == 1]
    assert (ok.prompt_tokens == ok.prompt_tokens_requested).all(), ok[["prompt_tokens", "prompt_tokens_requested"]]
    assert (ok.completion_tokens == ok.max_tokens).all()
    assert ok.prompt_tokens_requested.nunique() > 1  # the uniform distribution really varies


def test_timings_are_consistent_with_token_rows(chat_run) -> None:
    _, requests, tokens = chat_run
    ok = requests[requests.ok == 1].set_index("request_id")
    assert ((ok.ttft_ms > 0) & (ok.ttft_ms < ok.e2e_ms)).all()
    tokens = tokens[tokens.request_id.isin(ok.index)]
    per_request = tokens.groupby("request_id").t_ms
    counts = per_request.count()
    assert (counts.reindex(ok.index) == ok.n_events).all()
    gaps = tokens.sort_values(["request_id", "i"]).groupby("request_id").t_ms.diff().dropna()
    assert len(gaps) == int((ok.n_events - 1).sum())  # n - 1 gaps per request
    assert (per_request.max().reindex(ok.index) - ok.e2e_ms).abs().max() < 0.01
    assert ((ok.ttft_ms - per_request.min().reindex(ok.index)) <= 0.01).all()  # TTFT ≤ first token event


def test_rows_match_locust_counts_and_run_json(chat_run) -> None:
    run_dir, requests, _ = chat_run
    # Locust sees one event per request, and its final stats come after the last record: the counts are equal, and
    # its Aggregated row counts each request once. The level drains, so nothing is cut off at the end.
    assert (requests.error_kind == "cut_off").sum() == 0
    assert locust_count(run_dir, "POST") == len(requests) == locust_count(run_dir, "")
    meta = read_run_json(run_dir)
    assert meta["status"] == "completed" and meta["records"] == len(requests)
    assert meta["server"]["model"] == "smollm2" and meta["server"]["max_model_len"] == 2048


def test_completions_endpoint_and_stages(vllm_base_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "staged.yaml"
    scenario.write_text(
        "name: e2e-staged\napi: {endpoint: completions}\n"
        "load: {stages: [{users: 1, duration: 5s}, {users: 3, duration: 5s}]}\n"
        "data: {prompt_tokens: 50, output_tokens: 8}\n"
    )
    requests, _, code = run(scenario, tmp_path / "run", vllm_base_url)
    assert code == 0
    ok = requests[requests.ok == 1]
    assert set(ok.level) == {0, 1}  # one group of records per stage
    assert (ok.prompt_tokens == 50).all() and (ok.completion_tokens == 8).all()
    levels = pd.read_csv(tmp_path / "run" / LEVELS_CSV)
    assert levels.target.tolist() == [1, 3]
    assert set(ok[ok.level == 1].user) == {0, 1, 2} and set(ok[ok.level == 0].user) == {0}


def test_poisson_run_achieves_its_rate(vllm_base_url: str, tmp_path: Path) -> None:
    rate, duration = 4.0, 15.0
    scenario = tmp_path / "poisson.yaml"
    scenario.write_text(
        f"name: e2e-poisson\nload: {{rate: {rate}, duration: {duration}s, arrival: {{process: poisson, "
        "max_in_flight: 64}}\ndata: {prompt_tokens: 40, output_tokens: 4}\n"
    )
    requests, _, _ = run(scenario, tmp_path / "run", vllm_base_url)
    levels = pd.read_csv(tmp_path / "run" / LEVELS_CSV)
    start, end = levels.start_s[0], levels.end_s[0]
    # An arrival is due at send time minus its wait for a free slot: a slow server delays sends (and that wait is
    # recorded), but the schedule of arrivals is the load generator's job and must hold the rate.
    arrival = requests.t_start_s - requests.queue_wait_ms / 1000.0
    arrived = requests[(arrival >= start) & (arrival <= end)]
    achieved = len(arrived) / (end - start)
    assert achieved == pytest.approx(rate, rel=0.05)
    assert (arrived.queue_wait_ms >= 0).all()


def test_multi_turn_keeps_history_and_the_api_key_never_lands_on_disk(
    vllm_base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-vlab-test-7f3a9c1e5b"
    monkeypatch.setenv("VLAB_TEST_KEY", secret)
    data = Path(__file__).resolve().parents[2] / "scenarios" / "data" / "sharegpt_sample.json"
    scenario = tmp_path / "multiturn.yaml"
    scenario.write_text(
        "name: e2e-multiturn\napi: {api_key_env: VLAB_TEST_KEY}\nload: {users: 2, duration: 12s}\n"
        f"data: {{dataset: {{path: {data}, format: sharegpt, multi_turn: true}}, output_tokens: 16}}\n"
    )
    requests, _, code = run(scenario, tmp_path / "run", vllm_base_url)
    assert code == 0
    ok = requests[requests.ok == 1].sort_values("t_start_s")
    grew = 0
    for _, turns in ok.groupby("user"):
        tokens = turns.prompt_tokens.tolist()
        # A later turn carries the earlier turns and the model's 16-token answers: it is longer by more than 16.
        grew += sum(1 for a, b in itertools.pairwise(tokens) if b > a + 16)
    assert grew >= 1
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), f"API key written to {path}"


def test_shared_prefix_requests_are_exact_and_marked(vllm_base_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "prefix.yaml"
    scenario.write_text(
        "name: e2e-prefix\nload: {users: 2, duration: 8s}\n"
        "data: {prompt_tokens: 300, output_tokens: 4, shared_prefix: {tokens: 200, fraction: 0.5, count: 2}}\n"
    )
    requests, _, code = run(scenario, tmp_path / "run", vllm_base_url)
    assert code == 0
    ok = requests[requests.ok == 1]
    assert (ok.prompt_tokens == 300).all()
    assert set(ok.prefix_id) <= {-1, 0, 1} and (ok.prefix_id >= 0).any()
