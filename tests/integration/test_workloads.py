"""Trace replay, reasoning streams and the Responses API through the whole suite (Locust, records, summary) against
the fake SSE server: the schedule lag of a replay, the reasoning phases of a scripted reasoning stream (vLLM with
SmolLM2 has no reasoning parser), the Responses API's events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.pipeline import analyze
from vlab.commands.runner import run_locust
from vlab.core.runfolder import REQUESTS_CSV
from vlab.core.scenario import load_scenario
from vlab.testing.fakeserver import fake_sse_server


def run(tmp_path: Path, text: str, *server_args: str) -> pd.DataFrame:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    with fake_sse_server(tmp_path, *server_args) as url:
        run_locust(load_scenario(scenario), scenario, tmp_path / "run", host=url)
    return pd.read_csv(tmp_path / "run" / REQUESTS_CSV)


def test_a_trace_replay_sends_each_row_at_its_recorded_time(tmp_path: Path) -> None:
    # 30 rows over 5.7 s of trace with a burst (5 rows in 8 ms), replayed at speed 2: 2.85 s
    times = [0, 200, 400, 1000, 1002, 1004, 1006, 1008, *range(1500, 5900, 200)]
    lengths = [(20 + 7 * i % 50, 4 + i % 5) for i in range(len(times))]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": t, "input_length": n_in, "output_length": n_out}) + "\n"
                             for t, (n_in, n_out) in zip(times, lengths, strict=True)))  # fmt: skip
    requests = run(
        tmp_path,
        f"name: replay\nload: {{speed: 2, arrival: {{max_in_flight: 16}}, warmup_s: 0}}\n"
        f"data: {{trace: {{path: {trace}, format: mooncake}}, ignore_eos: true}}\n",
        "--true-prompt-tokens", "--interval-ms", "10",
    )  # fmt: skip
    assert len(requests) == len(times) and requests.ok.all()
    requests = requests.sort_values("trace_line")
    assert requests.trace_line.tolist() == list(range(1, len(times) + 1))
    # each row's lengths: the fake /tokenize counts words and no template, so the prompt is input_length words
    assert requests.prompt_tokens.tolist() == [n for n, _ in lengths]
    assert requests.max_tokens.tolist() == [n for _, n in lengths]
    # sent at (t_i − t_0) / speed after the first; the lag is send − that, as recorded
    sent = requests.t_start_s.to_numpy() - requests.t_start_s.iloc[0]
    due = np.array(times) / 1000.0 / 2
    lag = requests.schedule_lag_ms.to_numpy()
    assert np.all(lag >= 0) and np.median(lag) < 20 and lag.max() < 250, lag  # a loaded 2-core machine
    assert np.abs((sent - due) * 1000 - (lag - lag[0])).max() < 5  # lag measured on the same clock as the sends
    summary = analyze(tmp_path / "run")
    level = summary.table.iloc[0]
    assert level.schedule_lag_all_n == len(times)
    assert level.schedule_lag_all_max_ms == pytest.approx(lag.max(), abs=0.01)
    assert level.target == pytest.approx(len(times) / (times[-1] / 1000 / 2), rel=1e-4)  # rows / replay span


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_phases_on_a_fake_reasoning_stream(tmp_path: Path, field: str) -> None:
    requests = run(
        tmp_path,
        "name: think\nload: {users: 2, requests: 6, duration: 1s}\ndata: {prompt_tokens: 16, output_tokens: 10}\n",
        "--reasoning", "4", "--reasoning-field", field, "--interval-ms", "20",
    )  # fmt: skip
    ok = requests[requests.ok == 1]
    assert len(ok) >= 6
    assert (ok.reasoning_tokens == 4).all() and (ok.answer_tokens == 6).all()
    assert np.allclose(ok.ttfr_ms, ok.ttft_ms)  # the first generated token is a reasoning one
    gap = ok.ttfa_ms - ok.ttfr_ms  # 4 reasoning events 20 ms apart, then the first answer event
    assert gap.median() == pytest.approx(80, abs=15)
    assert ok.itl_reasoning_ms.median() == pytest.approx(20, abs=6)
    assert ok.itl_answer_ms.median() == pytest.approx(20, abs=6)
    summary = analyze(tmp_path / "run")
    assert summary.table.iloc[0].ttfa_p50 == pytest.approx(ok.ttfa_ms.median(), rel=0.5)


def test_the_responses_api_streamed_events(tmp_path: Path) -> None:
    requests = run(
        tmp_path,
        "name: responses\napi: {endpoint: responses}\nload: {users: 2, requests: 6, duration: 1s}\n"
        "data: {prompt_tokens: 16, output_tokens: 8}\n",
        "--true-prompt-tokens", "--reasoning", "2", "--interval-ms", "10",
    )  # fmt: skip
    ok = requests[requests.ok == 1]
    assert len(ok) >= 6 and (requests.endpoint == "responses").all()
    assert (ok.n_events == 8).all() and (ok.completion_tokens == 8).all() and (ok.prompt_tokens == 16).all()
    assert (ok.finish_reason == "max_output_tokens").all()
    assert (ok.reasoning_tokens == 2).all() and (ok.answer_tokens == 6).all()
    assert (ok.first_chunk_ms <= ok.ttft_ms).all()
