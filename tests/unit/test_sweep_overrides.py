"""`vlab sweep` overrides: vllm bench serve's words and `--set`, shown by `--dry-run` (nothing is started), checked by
the same strict model as the YAML; bad values are one line and exit code 2."""

from __future__ import annotations

import pytest

from vlab.commands.cli import main
from vlab.core.paths import REPO_ROOT

DEMO = str(REPO_ROOT / "scenarios" / "demo.yaml")


def dry_run(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    code = main(["sweep", DEMO, "--dry-run", *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_words_become_one_level_and_set_items(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dry_run(
        capsys, "--max-concurrency", "8", "--num-prompts", "20", "--random-input-len", "100",
        "--random-output-len", "16", "--model", "smollm2", "--endpoint", "completions",
    )  # fmt: skip
    assert code == 0
    assert "level 0: 8 users: 20 requests ended" in out and "level 1" not in out
    for item in ('load.stages=[{"users": 8, "requests": 20}]', "data.prompt_tokens=100", "data.output_tokens=16",
                 'api.model="smollm2"', "api.endpoint=completions"):  # fmt: skip
        assert f"--set {item}" in out, item


def test_request_rate_with_max_concurrency_is_an_open_loop_level_with_a_cap(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dry_run(capsys, "--request-rate", "3", "--max-concurrency", "5")
    assert code == 0
    assert "level 0: 3 req/s" in out and "--set load.arrival.max_in_flight=5" in out


def test_generic_set_is_applied(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dry_run(capsys, "--set", "load.stages=[{users: 2, duration: 5s}]")
    assert code == 0 and "level 0: 2 users: 5 s" in out.replace("≥ ", "")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-concurrency", "0"], "--max-concurrency 0: expected a positive number"),
        (["--request-rate", "-1"], "--request-rate -1: expected a positive number"),
        (["--set", "data.output_tokns=3"], "did you mean 'output_tokens'?"),
        (["--set", "data.output_tokens=abc"], "expected a token count (e.g. 256)"),
        (["--set", "nokey"], "expected KEY.PATH=VALUE"),
        (["--set", "load.stages=[{users: 0, duration: 5s}]"], "load.stages"),
    ],
)
def test_bad_overrides_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, out, err = dry_run(capsys, *flags)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_unknown_endpoint_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", DEMO, "--dry-run", "--endpoint", "embeddings-nope"])
    assert exc.value.code == 2 and "--endpoint" in capsys.readouterr().err
