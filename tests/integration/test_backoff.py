"""A closed-loop user facing error answers backs off instead of hot-looping, and honours Retry-After; the server
here is the fake SSE server answering every request with an error status (real vLLM cannot be made to)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlab.client.backoff import ERROR_BACKOFF_S, retry_after_s
from vlab.commands.runner import run_locust
from vlab.core.runfolder import REQUESTS_CSV
from vlab.core.scenario import load_scenario
from vlab.testing.fakeserver import fake_sse_server


def test_retry_after_forms() -> None:
    assert retry_after_s("3") == 3.0 and retry_after_s(" 0.5 ") == 0.5 and retry_after_s(None) is None
    assert retry_after_s("soon") is None and retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def _run(tmp_path: Path, *server_args: str) -> pd.DataFrame:
    scenario = tmp_path / "errors.yaml"
    scenario.write_text("name: errors\nload: {users: 2, duration: 4s}\ndata: {prompt_tokens: 16, output_tokens: 4}\n")
    with fake_sse_server(tmp_path, *server_args, timeout_s=15) as url:
        run_locust(load_scenario(scenario), scenario, tmp_path / "run", host=url)
    return pd.read_csv(tmp_path / "run" / REQUESTS_CSV)


def test_error_answers_back_off_exponentially(tmp_path: Path) -> None:
    requests = _run(tmp_path, "--status", "503")
    # 2 users x 4 s: waits of 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2 ... s give at most ~8 tries each; without a back-off
    # the fake server answers thousands per second
    assert 4 <= len(requests) <= 2 * 10, len(requests)
    assert (requests.error_kind == "http").all() and ERROR_BACKOFF_S[1] >= 1.0


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    requests = _run(tmp_path, "--status", "429", "--retry-after", "1.5")
    assert (requests.error_kind == "rate_limited").all()
    assert 2 <= len(requests) <= 2 * 4, len(requests)  # one try per user every 1.5 s over ~4 s
