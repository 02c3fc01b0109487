"""Trace files (vlab.core.traces): both formats, bad rows reported by file and line, the replay schedule, prefix
reuse, the scenario's trace levels and the prompts built from trace rows (vlab.locust.workload)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_vlab
from vlab.core.errors import ConfigError
from vlab.core.paths import REPO_ROOT
from vlab.core.scenario import load_scenario
from vlab.core.traces import ZERO_LENGTH, load_trace
from vlab.locust.workload import PromptFactory, WordVocabulary

SAMPLES = REPO_ROOT / "scenarios" / "traces"


def mooncake(tmp_path: Path, rows: list[dict | str], name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(t: int, n_in: int = 10, n_out: int = 5, ids: list[int] | None = None) -> dict:
    out: dict = {"timestamp": t, "input_length": n_in, "output_length": n_out}
    if ids is not None:
        out["hash_ids"] = ids
    return out


def test_the_shipped_samples_load_with_their_documented_sizes() -> None:
    moon = load_trace(SAMPLES / "sample-mooncake.jsonl", "mooncake", 128)
    assert (moon.summary.rows, moon.summary.loaded) == (48, 48)
    assert moon.rows[0].t_s == 0.0 and moon.rows[0].line == 1
    assert all(len(r.hash_ids) == -(-r.input_tokens // 128) for r in moon.rows)
    assert 0.5 < moon.summary.reusable_fraction < 0.9  # conversations extend earlier chains
    burst = load_trace(SAMPLES / "sample-burstgpt.csv", "burstgpt")
    assert (burst.summary.rows, burst.summary.loaded) == (40, 38)
    assert burst.summary.skipped_counts == {ZERO_LENGTH: 2}
    assert burst.rows[0].line == 2  # line 1 is the header
    assert "skipped 2 with zero input or output length (lines" in burst.summary.line()


def test_mooncake_times_are_milliseconds_relative_to_the_first_row(tmp_path: Path) -> None:
    trace = load_trace(mooncake(tmp_path, [row(1000), "", row(1500), row(3000)]), "mooncake", 8)
    assert [r.t_s for r in trace.rows] == [0.0, 0.5, 2.0]
    assert [r.line for r in trace.rows] == [1, 3, 4]  # blank lines keep the editor's numbering
    assert trace.offsets(2.0, 3) == [0.0, 0.25, 1.0]
    assert trace.mean_rate(3, 2.0) == pytest.approx(3 / 1.0)
    assert trace.span_s(2, 0.5) == pytest.approx(1.0)


def test_burstgpt_reads_its_columns_by_name_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("Model,Response tokens,Timestamp,Request tokens\nChatGPT,7,5.5,100\nGPT-4,9,6.0,12.0\n")
    trace = load_trace(path, "burstgpt")
    assert [(r.t_s, r.input_tokens, r.output_tokens, r.line) for r in trace.rows] == [(0.0, 100, 7, 2), (0.5, 12, 9, 3)]


@pytest.mark.parametrize(
    ("rows", "line", "says"),
    [
        ([row(0), "{not json", row(2)], 2, "not valid JSON"),
        ([row(0), row(1), {"timestamp": 2, "input_length": 3}], 3, "missing 'output_length'"),
        ([row(0), row(1, n_in=-4)], 2, "'input_length' must be a whole number of tokens"),
        ([row(0), row(1, n_in=2.5)], 2, "'input_length' must be a whole number"),
        ([row(0), {"timestamp": "soon", "input_length": 1, "output_length": 1}], 2, "'timestamp' must be a finite"),
        ([row(5), row(3)], 2, "before the previous row's"),
        ([row(0, n_in=20, ids=[1, 2]), row(1, n_in=20, ids=[1])], 2, "1 hash_ids for input_length 20"),
        ([row(0), row(1, ids=["a"])], 2, "'hash_ids' must be a list of whole numbers"),
        (["[1, 2]"], 1, "expected a JSON object"),
    ],
)
def test_a_bad_mooncake_row_is_one_line_with_file_and_line(
    tmp_path: Path, rows: list[dict | str], line: int, says: str
) -> None:
    path = mooncake(tmp_path, rows)
    with pytest.raises(ConfigError) as err:
        load_trace(path, "mooncake", 16)
    message = str(err.value)
    assert message.startswith(f"{path}: line {line}: ") and says in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("Timestamp,Request tokens\n1,2\n", 1, "missing column 'Response tokens'"),
        ("Timestamp,Request tokens,Response tokens\n1,2,3\n2,x,3\n", 3, "'Request tokens' is not a number: 'x'"),
        ("Timestamp,Request tokens,Response tokens\n1,2,3\n\n2,4\n", 4, "2 fields, but the header has 3"),
        ("Timestamp,Request tokens,Response tokens\n1,2,3\n-1,2,3\n", 3, "'Timestamp' must be a finite time"),
    ],
)
def test_a_bad_burstgpt_row_is_one_line_with_file_and_line(tmp_path: Path, text: str, line: int, says: str) -> None:
    path = tmp_path / "b.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_trace(path, "burstgpt")
    assert str(err.value).startswith(f"{path}: line {line}: ") and says in str(err.value)


def test_a_trace_needs_two_usable_rows_at_different_times(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="1 usable trace row"):
        load_trace(mooncake(tmp_path, [row(0), row(1, n_out=0)]), "mooncake", 16)
    with pytest.raises(ConfigError, match="same arrival time"):
        load_trace(mooncake(tmp_path, [row(4), row(4)], "same.jsonl"), "mooncake", 16)


def test_reusable_fraction_counts_shared_leading_blocks_only(tmp_path: Path) -> None:
    # blocks of 10: row 1 is new (0 of 25 reusable); row 2 shares blocks 1, 2 (20 of 30); row 3 starts with a
    # new block, so its later block 2 is not a prefix hit (0 of 20); row 4 repeats row 1's chain whole (25 of 25)
    rows = [row(0, 25, ids=[1, 2, 3]), row(1, 30, ids=[1, 2, 4]), row(2, 20, ids=[9, 2]), row(3, 25, ids=[1, 2, 3])]
    trace = load_trace(mooncake(tmp_path, rows), "mooncake", 10)
    assert trace.summary.reusable_fraction == pytest.approx((0 + 20 + 0 + 25) / 100)
    assert trace.summary.distinct_blocks == 5


def scenario_file(tmp_path: Path, trace: Path, load: str = "{speed: 2}") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\nload: {load}\ndata: {{trace: {{path: {trace}, format: mooncake, block_tokens: 8}}}}\n")
    return path


def test_a_trace_level_gets_its_rate_and_count_from_the_trace(tmp_path: Path) -> None:
    trace = mooncake(tmp_path, [row(0), row(1000), row(2000), row(4000)])
    stage = load_scenario(scenario_file(tmp_path, trace)).load.stages[0]
    assert (stage.requests, stage.speed) == (4, 2.0)
    assert stage.rate == pytest.approx(4 / 2.0)  # 4 rows over 4 s of trace, replayed in 2 s
    first_two = load_scenario(scenario_file(tmp_path, trace, "{speed: 1, requests: 2}")).load.stages[0]
    assert (first_two.requests, first_two.rate) == (2, pytest.approx(2.0))
    with pytest.raises(ConfigError, match=r"requests: 9, but the trace has 4 usable rows"):
        load_scenario(scenario_file(tmp_path, trace, "{speed: 1, requests: 9}"))
    with pytest.raises(ConfigError, match="speed"):
        load_scenario(scenario_file(tmp_path, trace, "{users: 2, duration: 5s}"))


def test_a_bad_trace_row_stops_vlab_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = mooncake(tmp_path, [row(0), row(1), '{"timestamp": 2, "input_length": "many", "output_length": 1}'])
    code, _out, err = run_vlab("sweep", str(scenario_file(tmp_path, trace)), "--dry-run", capsys=capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{trace}: line 3: 'input_length'" in lines[0], err


def test_trace_prompts_have_the_rows_lengths_and_share_text_where_hash_ids_do(tmp_path: Path) -> None:
    rows = [row(0, 20, 3, ids=[7, 8, 9]), row(1, 17, 4, ids=[7, 8, 5]), row(2, 12, 2, ids=[6, 8])]
    scenario = load_scenario(scenario_file(tmp_path, mooncake(tmp_path, rows)))
    words = [f"w{i}" for i in range(40)]
    factory = PromptFactory(scenario, "m", WordVocabulary(words, 1, 4))  # chat: 4 template tokens per prompt
    prompts, limits = [], []
    for i in range(3):
        prepared = factory.trace_request(i)
        body = json.loads(prepared.body)
        prompts.append(body["messages"][0]["content"].split())
        limits.append(body["max_tokens"])
        assert prepared.prompt_tokens_requested == rows[i]["input_length"] and prepared.trace_line == i + 1
    assert [len(p) for p in prompts] == [16, 13, 8]  # input − the template's 4
    assert limits == [3, 4, 2]
    assert prompts[0][:13] == prompts[1][:13]  # blocks 7, 8 (16 words) shared; 13 words fit in row 2's prompt
    assert prompts[2][:8] != prompts[0][:8]  # block 6 is not block 7: no shared prefix
    again = PromptFactory(scenario, "m", WordVocabulary(words, 1, 4), node="other-process")
    assert json.loads(again.trace_request(0).body) == json.loads(factory.trace_request(0).body)
