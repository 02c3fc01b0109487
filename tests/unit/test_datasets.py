"""Datasets that say what they did (issue 21): every kind of mess is loaded or skipped with a named reason, the
summary line is exact, a file with nothing usable is one ConfigError line, and nothing raises anything else."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vlab.core.datasets import (
    Conversation,
    Note,
    Reason,
    Turn,
    load_dataset,
    load_questions,
    load_scenario_data,
)
from vlab.core.errors import ConfigError
from vlab.core.paths import REPO_ROOT
from vlab.core.scenario import Scenario

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "datasets"
SHAREGPT_MESS = FIXTURES / "sharegpt_mess.json"
PROMPTS_MESS = FIXTURES / "prompts_mess.jsonl"


def _counts(groups) -> dict[str, int]:
    return {key: occ.count for key, occ in groups.items()}


# ---------------------------------------------------------------------------------------------- the mess fixtures
def test_sharegpt_mess_counts_and_line() -> None:
    loaded = load_dataset(SHAREGPT_MESS, "sharegpt")
    s = loaded.summary
    assert (s.total, s.loaded, s.position, s.unit) == (36, 18, "entry", "conversations")
    assert s.skipped_count == s.total - s.loaded
    assert [e.position for e in loaded.entries] == [1, 2, 3, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 31, 33, 34, 36]
    assert _counts(s.skipped) == {
        Reason.NOT_OBJECT: 2,
        Reason.DUPLICATE_ID: 2,
        Reason.NO_HUMAN_TURN: 2,
        Reason.NON_STRING_VALUE: 2,
        Reason.EMPTY_VALUE: 2,
        Reason.NO_CONVERSATION: 1,
        Reason.NOT_LIST: 1,
        Reason.EMPTY_CONVERSATION: 1,
        Reason.MISSING_ROLE: 1,
        Reason.MISSING_VALUE: 1,
        Reason.NULL_VALUE: 1,
        Reason.BAD_UNICODE: 1,
        Reason.NON_STRING_SYSTEM: 1,
    }
    assert {k: o.positions for k, o in s.cut.items()} == {
        Reason.TURN_NOT_OBJECT: [20],
        Reason.SYSTEM_AFTER_HUMAN: [21],
        Reason.NON_STRING_VALUE: [34],
        Reason.EMPTY_VALUE: [19],
    }
    assert s.notes[Note.WITH_SYSTEM].count == 4
    assert s.unknown_roles == ["tool", "null"]
    assert s.line() == (
        f"{SHAREGPT_MESS}: loaded 18 of 36 conversations; "
        "skipped 2 not JSON objects (entries 9, 10), 2 duplicate ids (entries 15, 32), "
        "2 without a human turn (entries 14, 35), 2 non-string values (entries 7, 29), 2 empty values (entries 4, 5), "
        "1 without 'conversations' (entry 12), 1 'conversations' not a list (entry 11), "
        "1 empty conversation (entry 13), 1 turn without 'from' (entry 28), 1 missing 'value' (entry 8), "
        "1 null value (entry 6), 1 text with a lone surrogate (entry 27), 1 non-string 'system' (entry 30); "
        "cut at the first unusable turn: 1 turn not a JSON object (entry 20), "
        "1 system turn after a human turn (entry 21), 1 non-string value (entry 34), 1 empty value (entry 19); "
        "4 with a system prompt, 2 turns with an unknown role dropped (entries 18, 31; roles 'tool', 'null'), "
        "2 unusable assistant replies ignored (entries 23, 33), 1 with several system texts joined (entry 25), "
        "1 empty system prompt ignored (entry 26), 1 leading assistant turn dropped (entry 3), "
        "1 assistant turn joined to the previous reply (entry 22), 1 'conversation' read as 'conversations', "
        "1 'messages' read as 'conversations', 1 'role'/'content' read as 'from'/'value'"
    )


def test_sharegpt_mess_entries_are_what_the_rules_say() -> None:
    by_pos = {e.position: e for e in load_dataset(SHAREGPT_MESS, "sharegpt").entries}
    # A system turn becomes the system prompt; a top-level `system` and a system turn are joined.
    assert by_pos[2].system == "You are a terse assistant."
    assert by_pos[25].system == "You are a lab assistant.\n\nCite your sources."
    assert by_pos[16] == Conversation((Turn("What is batching?", "Le regroupement."),), "Answer in French.", 16, "c16")
    # A leading assistant turn is dropped; the conversation is kept.
    assert by_pos[3].turns == (Turn("Explain decode.", "Token by token generation."),)
    # Per-turn: an unknown role is dropped and the conversation goes on.
    assert [t.human for t in by_pos[18].turns] == ["Look up the weather.", "And tomorrow?"]
    assert by_pos[18].turns[0].reply == "It is 21 degrees."
    # Cut: an unusable human turn ends the conversation there; what came before is kept as recorded.
    assert by_pos[19].turns == (Turn("First question.", "First answer."),)
    assert by_pos[34].turns == (Turn("Pick a number.", "Seven."),)
    assert [t.human for t in by_pos[20].turns] == ["Count to three."]
    assert [t.human for t in by_pos[21].turns] == ["Be nice."]
    # Assistant replies: consecutive ones joined, unusable ones ignored (they are never sent).
    assert by_pos[22].turns[0].reply == "Why did the GPU cross the road?\n\nTo get to the other batch."
    assert by_pos[23].turns == (Turn("Say nothing."), Turn("Really nothing?"))
    assert [t.human for t in by_pos[33].turns] == ["What is vLLM?", "And PagedAttention?"]
    # Role spellings: case and spaces, user/chatgpt/bing/bard.
    assert [t.human for t in by_pos[24].turns] == ["Hi.", "Bing?", "Bard?"]
    assert by_pos[26].system is None and by_pos[36].system == "Reply in one word."
    assert by_pos[31].id == "31" and by_pos[1].id == "c1"


def test_prompts_mess_counts_and_line() -> None:
    loaded = load_dataset(PROMPTS_MESS, "jsonl")
    s = loaded.summary
    assert (s.total, s.loaded, s.position, s.unit) == (27, 11, "line", "prompts")  # 29 lines, 2 blank
    assert s.skipped_count == s.total - s.loaded and not s.cut
    assert s.line() == (
        f"{PROMPTS_MESS}: loaded 11 of 27 prompts; "
        "skipped 3 not JSON objects (lines 11, 13, 24), 2 invalid JSON (lines 10, 28), "
        "2 non-string values (lines 7, 8), 2 empty values (lines 4, 5), 2 without 'prompt' or 'text' (lines 9, 26), "
        "1 duplicate id (line 19), 1 null value (line 6), 1 text with a lone surrogate (line 21), "
        "1 non-string 'system' (line 15), 1 conversation for format: sharegpt (line 17); "
        "1 with a system prompt, 1 empty system prompt ignored (line 16), 1 'text' read as 'prompt', "
        "1 bare string read as a prompt, 1 byte order mark ignored"
    )
    prompts = {e.position: e.turns[0].human for e in loaded.entries}
    assert prompts[1] == "Explain the KV cache in one sentence."  # after the byte order mark
    assert prompts[2] == "Prompts may use the text key."
    assert prompts[12] == "A bare JSON string is a prompt too."
    assert prompts[20] == "A line\u2028separator inside the text."  # U+2028 inside a line does not split it
    assert prompts[22] == "A Windows line ending."
    assert prompts[29] == "Is a é escape fine?"  # 'prompt' wins over 'text'
    systems = {e.position: e.system for e in loaded.entries if e.system is not None}
    assert systems == {14: "You are terse."}


def test_sharegpt_jsonl_skips_invalid_lines() -> None:
    path = FIXTURES / "sharegpt_mess.jsonl"
    loaded = load_dataset(path, "sharegpt")
    assert loaded.summary.line() == (
        f"{path}: loaded 2 of 4 conversations; skipped 1 invalid JSON (line 2), 1 null value (line 5); "
        "1 leading assistant turn dropped (line 3)"
    )
    assert [e.id for e in loaded.entries] == ["a", "c"]


def test_unusable_file_is_one_config_error_line() -> None:
    path = FIXTURES / "unusable.jsonl"
    with pytest.raises(ConfigError) as info:
        load_dataset(path, "jsonl")
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"{path}: no usable prompts in 6 lines; skipped 1 invalid JSON (line 3), 1 not a JSON object (line 6), "
        "1 null value (line 2), 1 empty value (line 1), 1 without 'prompt' or 'text' (line 5), "
        "1 conversation for format: sharegpt (line 4)"
    )


def test_questions_mess_for_load_and_for_evaluation() -> None:
    path = FIXTURES / "questions_mess.jsonl"
    for_load = load_questions(path)
    assert for_load.summary.line() == (
        f"{path}: loaded 5 of 9 questions; skipped 1 invalid JSON (line 8), 1 non-string value (line 10), "
        "1 empty value (line 4), 1 without 'question' (line 5); 1 bare string read as a question"
    )
    labelled = load_questions(path, labelled=True)
    assert labelled.summary.line() == (
        f"{path}: loaded 2 of 9 questions; skipped 3 without a valid 'file' and 'page' (lines 3, 6, 7), "
        "1 invalid JSON (line 8), 1 non-string value (line 10), 1 empty value (line 4), 1 without 'question' (line 5)"
    )
    assert [(q.file, q.page) for q in labelled.entries] == [("kv_cache.pdf", 1), ("kv_cache.pdf", 2)]


def test_summary_is_json_for_run_json() -> None:
    dumped = load_dataset(FIXTURES / "sharegpt_mess.jsonl", "sharegpt").summary.model_dump(mode="json")
    assert json.loads(json.dumps(dumped)) == {
        "path": str(FIXTURES / "sharegpt_mess.jsonl"),
        "format": "sharegpt",
        "unit": "conversations",
        "position": "line",
        "total": 4,
        "loaded": 2,
        "skipped": {"invalid JSON": {"count": 1, "positions": [2]}, "null value": {"count": 1, "positions": [5]}},
        "cut": {},
        "notes": {"leading assistant turn dropped": {"count": 1, "positions": [3]}},
        "unknown_roles": [],
    }


def test_many_positions_are_elided_in_the_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("".join('{"prompt": ""}\n' for _ in range(150)) + '{"prompt": "ok"}\n')
    s = load_dataset(path, "jsonl").summary
    assert s.line() == f"{path}: loaded 1 of 151 prompts; skipped 150 empty values (lines 1, 2, 3, …)"
    assert s.skipped[Reason.EMPTY_VALUE].count == 150 and len(s.skipped[Reason.EMPTY_VALUE].positions) == 100


# ------------------------------------------------------------------------------------------ whole-file problems
@pytest.mark.parametrize(
    ("content", "fmt", "expected"),
    [
        (None, "jsonl", "dataset file not found"),
        (b"", "jsonl", "the dataset file is empty"),
        (b"\n  \n\t\n", "sharegpt", "the dataset file is empty"),
        (b'{"prompt": "caf\xe9"}\n', "jsonl", "not UTF-8 text (byte 0xe9 on line 1); save the dataset file as UTF-8"),
        ('{"prompt": "x"}\n'.encode("utf-16"), "jsonl", "UTF-16 text; save the dataset file as UTF-8"),
        (b'[\n {"conversations": []},\n {"conversations": [}\n]', "sharegpt", "invalid JSON at line 3, column 21"),
        (
            b'[{"conversations": [{"from": "human", "value": "hi"}]},]',
            "sharegpt",
            "invalid JSON at line 1, column 56: Expecting value",
        ),
        (
            b'{\n "data": [\n  {"prompt": "x"}\n ]\n}\n',
            "jsonl",
            "one JSON object (keys 'data') over 5 lines; expected a JSON list",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "sharegpt", "invalid JSON: nested too deeply"),
        (b"[" + b"1" * 5000 + b"]", "sharegpt", "invalid JSON: Exceeds the limit"),
        (b"[]", "sharegpt", "no usable conversations in 0 entries"),
        (b"[1, 2]", "sharegpt", "no usable conversations in 2 entries; skipped 2 not JSON objects (entries 1, 2)"),
        (
            b'[{"conversations": [{"from": "gpt", "value": "hello"}]}]',
            "sharegpt",
            "no usable conversations in 1 entry; skipped 1 without a human turn (entry 1)",
        ),
        (b'{"prompt": "x"}\n', "sharegpt", "skipped 1 without 'conversations' (line 1)"),
    ],
)
def test_whole_file_problems_are_one_line(tmp_path: Path, content: bytes | None, fmt: str, expected: str) -> None:
    path = tmp_path / "data.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_dataset(path, fmt)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message, message
    assert info.value.exit_code == 2


def test_a_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder, not a dataset file$"):
        load_dataset(tmp_path, "jsonl")
    with pytest.raises(ConfigError, match=r"questions file not found$"):
        load_questions(tmp_path / "absent.jsonl")


def test_bom_is_tolerated_in_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf[{"conversations": [{"from": "human", "value": "hi"}]}]')
    assert (
        load_dataset(path, "sharegpt").summary.line()
        == f"{path}: loaded 1 of 1 conversations; 1 byte order mark ignored"
    )


def _garbage(rng: random.Random, depth: int = 0):
    """A random JSON value biased towards the shapes the loaders look at."""
    keys = [
        "conversations",
        "conversation",
        "messages",
        "from",
        "role",
        "value",
        "content",
        "prompt",
        "text",
        "system",
        "id",
        "question",
        "file",
        "page",
    ]
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice(
            [
                None,
                True,
                0,
                -1,
                3.5,
                "",
                " ",
                "human",
                "gpt",
                "system",
                "user",
                "x",
                "\ud800",
                1e308,
                "assistant",
                "tool",
                [],
                {},
            ]
        )
    if roll < 0.55:
        return [_garbage(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(keys): _garbage(rng, depth + 1) for _ in range(rng.randrange(5))}


@pytest.mark.parametrize("seed", range(20))
def test_random_garbage_never_raises_anything_but_config_error(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows = [_garbage(rng) for _ in range(30)]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(rows))
    as_lines = tmp_path / "lines.jsonl"
    lines = [json.dumps(r) if rng.random() > 0.1 else json.dumps(r)[:-1] for r in rows]
    as_lines.write_text("\n".join(lines))
    for path in (as_list, as_lines):
        for load in (
            lambda p: load_dataset(p, "sharegpt"),
            lambda p: load_dataset(p, "jsonl"),
            load_questions,
            lambda p: load_questions(p, labelled=True),
        ):
            try:
                summary = load(path).summary
            except ConfigError as exc:
                assert "\n" not in str(exc)
                continue
            assert summary.skipped_count == summary.total - summary.loaded
            assert "\n" not in summary.line()


# ------------------------------------------------------------------------------------- shipped data, old loader
def _old_load_dataset(path: Path, fmt: str) -> list[list[str]]:
    """The loader before issue 21 (vlab/locust/workload.py at f269c80), on valid files."""
    text = path.read_text()
    if fmt == "sharegpt" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    entries = []
    for row in rows:
        if fmt == "jsonl":
            prompt = row.get("prompt") or row.get("text") if isinstance(row, dict) else None
            if isinstance(prompt, str) and prompt.strip():
                entries.append([prompt])
        else:
            turns = row.get("conversations") if isinstance(row, dict) else None
            human = [t["value"] for t in turns or [] if isinstance(t, dict) and t.get("from") in ("human", "user")]
            if human:
                entries.append(human)
    return entries


@pytest.mark.parametrize(("name", "fmt"), [("prompts.jsonl", "jsonl"), ("sharegpt_sample.json", "sharegpt")])
def test_shipped_datasets_load_clean_and_unchanged(name: str, fmt: str) -> None:
    path = REPO_ROOT / "scenarios" / "data" / name
    loaded = load_dataset(path, fmt)
    assert not loaded.summary.skipped and not loaded.summary.cut and not loaded.summary.notes
    assert (
        loaded.summary.line()
        == f"{path}: loaded {loaded.summary.total} of {loaded.summary.total} {loaded.summary.unit}"
    )
    assert [[t.human for t in e.turns] for e in loaded.entries] == _old_load_dataset(path, fmt)


def test_shipped_scenarios_preload_their_data() -> None:
    from vlab.core.scenario import load_scenario

    for name in ("dataset-jsonl.yaml", "sharegpt-multiturn.yaml", "rag.yaml"):
        summary = load_scenario_data(load_scenario(REPO_ROOT / "scenarios" / name).data)
        assert summary is not None and summary.loaded == summary.total > 0 and not summary.skipped


def test_rag_sample_questions_are_all_labelled() -> None:
    loaded = load_questions(REPO_ROOT / "rag" / "sample" / "questions.jsonl", labelled=True)
    assert loaded.summary.loaded == loaded.summary.total == 21 and not loaded.summary.notes
    assert all(q.file and q.page and q.page >= 1 for q in loaded.entries)


def test_one_questions_loader_for_load_and_evaluation() -> None:
    import rag.evaluate
    import vlab.locust.workload

    assert rag.evaluate.load_questions is load_questions is vlab.locust.workload.load_questions


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one"}\n')
    assert load_dataset(path, "jsonl") is load_dataset(path, "jsonl")  # cached: start-up check + factory
    path.write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    assert load_dataset(path, "jsonl").summary.loaded == 2


# ------------------------------------------------------------------------------------------ the request bodies
def _factory(tmp_path: Path, endpoint: str, rows: list[dict], fmt: str = "jsonl"):
    from vlab.locust.workload import PromptFactory

    path = tmp_path / f"data.{endpoint}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scenario = Scenario.model_validate(
        {
            "name": "t",
            "api": {"endpoint": endpoint},
            "load": {"users": 1, "duration": 1},
            "data": {"dataset": {"path": str(path), "format": fmt}, "output_tokens": 8},
        }
    )
    return PromptFactory(scenario, "smollm2", None)


def test_chat_body_has_the_system_message(tmp_path: Path) -> None:
    factory = _factory(tmp_path, "chat", [{"prompt": "Hi there", "system": "Be brief."}])
    assert factory.dataset_summary is not None and factory.dataset_summary.loaded == 1
    prepared = factory.next_request()
    body = json.loads(prepared.body)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert prepared.prompt_tokens_requested == -1 and prepared.max_tokens == 8
    assert list(prepared.messages) == body["messages"]


def test_completions_body_has_the_system_prefix(tmp_path: Path) -> None:
    factory = _factory(tmp_path, "completions", [{"prompt": "Hi there", "system": "Be brief."}])
    prepared = factory.next_request()
    assert json.loads(prepared.body)["prompt"] == "Be brief.\n\nHi there"
    assert prepared.prompt_tokens_requested == -1


def test_without_a_system_prompt_the_body_is_as_before(tmp_path: Path) -> None:
    factory = _factory(tmp_path, "chat", [{"prompt": "Hi there"}])
    body = json.loads(factory.next_request().body)
    assert body["messages"] == [{"role": "user", "content": "Hi there"}]
    completions = _factory(tmp_path, "completions", [{"prompt": "Hi there"}])
    assert json.loads(completions.next_request().body)["prompt"] == "Hi there"


def test_multi_turn_sends_the_system_prompt_once(tmp_path: Path) -> None:
    conversation = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "One?"},
            {"from": "gpt", "value": "1"},
            {"from": "human", "value": "Two?"},
        ]
    }
    factory = _factory(tmp_path, "chat", [conversation], fmt="sharegpt")
    entry = factory.next_conversation()
    assert entry.system == "Be brief." and [t.human for t in entry.turns] == ["One?", "Two?"]
    first = factory.build(entry.turns[0].human, 8, history=[], system=entry.system)
    history = [*first.messages, {"role": "assistant", "content": "the model's answer"}]
    second = factory.build(entry.turns[1].human, 8, history=history)
    assert [m["role"] for m in json.loads(second.body)["messages"]] == ["system", "user", "assistant", "user"]
    assert factory.conversation() == ["One?", "Two?"]  # the list user.py replays today (without the system)
