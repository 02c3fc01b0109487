"""End to end against real local vLLM servers: embeddings (all-MiniLM-L6-v2 served as a pooling model), the
Responses API and a trace replay (SmolLM2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.pipeline import analyze
from vlab.commands.runner import run_locust
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV
from vlab.core.scenario import load_scenario

pytestmark = pytest.mark.e2e


def run(tmp_path: Path, text: str, host: str) -> pd.DataFrame:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    assert run_locust(load_scenario(scenario), scenario, tmp_path / "run", host=host) == 0
    return pd.read_csv(tmp_path / "run" / REQUESTS_CSV)


def test_embeddings_against_vllm_serving_minilm(vllm_embed_base_url: str, tmp_path: Path) -> None:
    requests = run(
        tmp_path,
        "name: e2e-embeddings\napi: {endpoint: embeddings}\nload: {users: 2, requests: 16, duration: 2s}\n"
        "data: {prompt_tokens: 40, batch: 4}\n",
        vllm_embed_base_url,
    )
    assert len(requests) >= 16 and requests.ok.all() and (requests.endpoint == "embeddings").all()
    # exact lengths through a WordPiece tokenizer: 4 texts of 40 tokens ([CLS] and [SEP] included) per request
    assert (requests.prompt_tokens == 160).all() and (requests.prompt_tokens_requested == 160).all()
    assert requests.e2e_ms.gt(0).all() and requests.ttft_ms.isna().all() and (requests.n_events == 0).all()
    level = analyze(tmp_path / "run").table.iloc[0]
    assert level.req_per_s > 0 and level.input_tok_per_s == pytest.approx(160 * level.req_per_s, rel=1e-6)


def test_the_responses_api_against_vllm(vllm_base_url: str, tmp_path: Path) -> None:
    requests = run(
        tmp_path,
        "name: e2e-responses\napi: {endpoint: responses}\nload: {users: 2, requests: 6, duration: 2s}\n"
        "data: {prompt_tokens: 48, output_tokens: 8}\n",
        vllm_base_url,
    )
    ok = requests[requests.ok == 1]
    assert len(ok) == len(requests) >= 6
    assert (ok.completion_tokens == 8).all() and (ok.prompt_tokens == ok.prompt_tokens_requested).all()
    assert (ok.n_events >= 1).all() and (ok.ttft_ms < ok.e2e_ms).all()
    assert (ok.finish_reason == "max_output_tokens").all()


def test_a_trace_replay_against_vllm(vllm_base_url: str, tmp_path: Path) -> None:
    trace = REPO_ROOT / "scenarios" / "traces" / "sample-mooncake.jsonl"
    requests = run(
        tmp_path,
        "name: e2e-trace\nload: {speed: 2, requests: 12, arrival: {max_in_flight: 16}, warmup_s: 0}\n"
        f"data: {{trace: {{path: {trace}, format: mooncake, block_tokens: 128}}, ignore_eos: true}}\n",
        vllm_base_url,
    )
    assert len(requests) == 12 and requests.ok.all()
    assert sorted(requests.trace_line) == list(range(1, 13))
    assert (requests.prompt_tokens == requests.prompt_tokens_requested).all()  # exact, chat template included
    assert (requests.completion_tokens == requests.max_tokens).all()
    assert requests.schedule_lag_ms.max() < 500
