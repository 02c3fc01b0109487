"""RAG as a load workload against the real local vLLM: retrieval timed apart from generation, real prompt lengths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vlab.commands.runner import run_locust
from vlab.core.paths import REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV
from vlab.core.scenario import load_scenario

pytestmark = pytest.mark.e2e


def test_rag_user_records_retrieval_and_generation(vllm_base_url: str, tmp_path: Path) -> None:
    sample = REPO_ROOT / "rag" / "sample"
    scenario = tmp_path / "rag.yaml"
    scenario.write_text(
        "name: e2e-rag\napi: {metrics_interval_s: 0}\nload: {users: 2, duration: 10s}\n"
        f"data: {{output_tokens: 16, rag: {{questions: {sample / 'questions.jsonl'}, corpus: {sample / 'pdfs'}, "
        f"db: {tmp_path / 'db'}, k: 3}}}}\n"
    )
    code = run_locust(load_scenario(scenario), scenario, tmp_path / "run", host=vllm_base_url)
    assert code == 0
    requests = pd.read_csv(tmp_path / "run" / REQUESTS_CSV)
    ok = requests[requests.ok == 1]
    assert len(ok) >= 2
    assert (ok.retrieval_ms > 0).all() and (ok.retrieval_ms < ok.e2e_ms + 60_000).all()
    # Three retrieved chunks and the system prompt: far longer than the question alone.
    assert (ok.prompt_tokens > 150).all() and (ok.completion_tokens == 16).all()
    assert (ok.prompt_tokens_requested == -1).all()  # lengths come from retrieval, not from a distribution
