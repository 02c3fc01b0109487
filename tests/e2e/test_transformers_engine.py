"""End to end on the second engine: `transformers serve --continuous-batching` started from its profile
(`cpu-smollm2-transformers-cb`, the local model folder, offline), measured by the suite. The differences from vLLM the
suite tolerates are checked on the real server: no `data: [DONE]` (an error unless `api.require_done: false`), a
role chunk first, a closing chunk with an empty delta (not a token), the usage on that closing chunk, no /metrics;
and it answers 422 to vLLM's `ignore_eos`, so the scenario leaves it off."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.pipeline import analyze
from server.launcher import start_server
from server.profile import load_profile
from vlab.client.http import find_free_port, http_get
from vlab.commands.runner import run_locust
from vlab.core.paths import MODELS_DIR, REPO_ROOT
from vlab.core.runfolder import REQUESTS_CSV
from vlab.core.scenario import load_scenario

pytestmark = pytest.mark.e2e
DATASET = REPO_ROOT / "scenarios" / "data" / "prompts.jsonl"


def test_transformers_cb_profile_serves_and_the_suite_measures_it(tmp_path: Path) -> None:
    profile = load_profile("cpu-smollm2-transformers-cb")
    scenario = tmp_path / "tf.yaml"
    scenario.write_text(
        "name: e2e-transformers\n"
        f"api: {{endpoint: chat, tokenizer: {MODELS_DIR / 'smollm2-135m-instruct'}, require_done: false,"
        " read_timeout_s: 120}\n"
        "load: {users: 2, duration: 8s, warmup_s: 0}\n"
        "data: {prompt_tokens: 32, output_tokens: 12, ignore_eos: false}\n"  # transformers serve: 422 on ignore_eos
    )
    with start_server(profile, port=find_free_port(), log_path=tmp_path / "server.log") as server:
        assert http_get(f"{server.base_url}/metrics")[0] == 404  # the suite's sampler must cope without it
        run_dir = tmp_path / "run"
        run_locust(load_scenario(scenario), scenario, run_dir, host=server.base_url, server_profile=profile.name)
        # the same stream with [DONE] required: every request is `no_done`, none silently accepted
        strict = tmp_path / "strict.yaml"
        strict.write_text(scenario.read_text().replace("require_done: false", "require_done: true")
                          .replace("duration: 8s", "duration: 2s"))  # fmt: skip
        strict_dir = tmp_path / "strict"
        run_locust(load_scenario(strict), strict, strict_dir, host=server.base_url, server_profile=profile.name)
        # a dataset scenario against the same non-vLLM server
        dataset = tmp_path / "ds.yaml"
        dataset.write_text(
            scenario.read_text()
            .replace("duration: 8s", "duration: 3s")
            .replace(
                "data: {prompt_tokens: 32, output_tokens: 12, ignore_eos: false}",
                f"data: {{output_tokens: 8, ignore_eos: false, dataset: {{path: {DATASET}, format: jsonl}}}}",
            )
        )
        dataset_dir = tmp_path / "dataset"
        run_locust(load_scenario(dataset), dataset, dataset_dir, host=server.base_url, server_profile=profile.name)
    requests = pd.read_csv(run_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    assert len(requests) >= 2 and requests.ok.all(), requests.error.unique()
    assert (requests.finish_reason.isin(["length", "stop"])).all()
    # exact prompt lengths without /tokenize: the local tokenizer's count is the server's own (usage)
    assert (requests.prompt_tokens == requests.prompt_tokens_requested).all() and (
        requests.prompt_tokens_requested == 32
    ).all()
    # the closing empty-delta chunk is not a token event: one event per generated token, as usage counts them
    assert (requests.n_events == requests.completion_tokens).all()
    assert (requests.first_chunk_ms < requests.ttft_ms).all()  # the role chunk comes before the first token
    strict_requests = pd.read_csv(strict_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    assert len(strict_requests) >= 1 and (strict_requests.error_kind == "no_done").all()
    from_dataset = pd.read_csv(dataset_dir / REQUESTS_CSV, keep_default_na=False, na_values=[""])
    assert len(from_dataset) >= 1 and from_dataset.ok.all(), from_dataset.error.unique()
    s = analyze(run_dir)
    # every request belongs to the level; which of them fall inside its steady-state window depends on the machine's
    # speed (a busy machine stretches the drain past the level's end), so only "some" is a property
    assert s.table["n_sent"].sum() == len(requests) and 1 <= s.table["n_measured"].sum() <= len(requests)
    assert s.table["ttft_p50"].iloc[0] > 0
    assert s.server is None or not s.server.available
