"""An interrupted matrix continues where it stopped. The cells' servers here are the fake SSE server (started and
stopped per cell like vLLM would be): interrupting real vLLM start-ups is what tests/e2e/test_matrix.py avoids,
and the resume bookkeeping does not depend on which server answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlab.commands.matrix import MATRIX_JSON, run_matrix
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, read_run_meta
from vlab.testing.fakeserver import fake_sse_server


@dataclass
class FakeServed:
    base_url: str
    startup_s: float | None = 0.0


class FakeStarter:
    """Starts a fake server per cell; records the cells started; raises Ctrl-C on the `interrupt_at`-th start."""

    def __init__(self, folder: Path, interrupt_at: int | None = None) -> None:
        self.folder, self.interrupt_at, self.started = folder, interrupt_at, []  # type: list[str]

    @contextlib.contextmanager
    def __call__(self, profile: Any, log_path: Path) -> Iterator[FakeServed]:
        self.started.append(profile.name)
        if len(self.started) == self.interrupt_at:
            raise KeyboardInterrupt
        log_path.write_text(f"fake server for {profile.name} (max_num_seqs {profile.max_num_seqs})\n")
        with fake_sse_server(self.folder, "--interval-ms", str(5 * profile.max_num_seqs)) as url:
            yield FakeServed(url)


def _matrix(tmp_path: Path, seqs: str = "[1, 2]") -> Path:
    (tmp_path / "s.yaml").write_text(
        "name: tiny\nload:\n  stages: [{users: 1, duration: 2s}, {users: 2, duration: 2s}]\n  warmup_s: 0\n"
        "data: {prompt_tokens: 16, output_tokens: 8}\n"
    )
    path = tmp_path / "m.yaml"
    path.write_text(f"name: tiny\nscenario: s.yaml\nprofiles: [cpu-smollm2]\noverrides: {{max_num_seqs: {seqs}}}\n")
    return path


def test_an_interrupted_matrix_resumes(tmp_path: Path, capsys) -> None:
    matrix, out = _matrix(tmp_path), tmp_path / "out"
    first = FakeStarter(tmp_path, interrupt_at=2)
    assert run_matrix(matrix, out, start=first) == 130
    state = {c["name"]: c for c in json.loads((out / MATRIX_JSON).read_text())["cells_state"]}
    one, two = "cpu-smollm2.max_num_seqs-1", "cpu-smollm2.max_num_seqs-2"
    assert state[one]["status"] == "done" and state[two]["status"] == "interrupted"
    assert (
        out / "cells" / one / REPORT_HTML
    ).exists() and "resume with: vlab experiment matrix" in capsys.readouterr().err

    second = FakeStarter(tmp_path)
    assert run_matrix(matrix, out, start=second) == 0
    assert second.started == [two]  # the done cell is skipped
    text = capsys.readouterr().out
    assert f"[{one}] done before: skipped" in text and "Pareto front (output tok/s, tok/s per request): " in text
    state = {c["name"]: c for c in json.loads((out / MATRIX_JSON).read_text())["cells_state"]}
    assert state[two]["status"] == "done" and state[two]["attempts"] == 2 and state[one]["attempts"] == 1
    assert read_run_meta(out / "cells" / two).server_profile == two
    assert (out / "cells" / two / "profile.yaml").read_text().count("max_num_seqs: 2") == 1
    page = (out / "compare.html").read_text()
    assert 'id="pareto-front-table"' in page and one in page and two in page

    third = FakeStarter(tmp_path)
    assert run_matrix(matrix, out, start=third) == 0 and third.started == []

    manifest = json.loads((out / MATRIX_JSON).read_text())  # as an older suite wrote it, before a profile key with
    for cell in manifest["cells"]:  # a default was added: still the same matrix
        del cell["profile"]["tensor_parallel_size"]
    (out / MATRIX_JSON).write_text(json.dumps(manifest))
    upgraded = FakeStarter(tmp_path)
    assert run_matrix(matrix, out, start=upgraded) == 0 and upgraded.started == []

    (out / "cells" / one / REQUESTS_CSV).unlink()  # a cell whose records are gone is run again
    fourth = FakeStarter(tmp_path)
    assert run_matrix(matrix, out, start=fourth) == 0 and fourth.started == [one]


def test_a_folder_of_another_matrix_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run_matrix(_matrix(tmp_path, "[1]"), out, start=FakeStarter(tmp_path)) == 0
    from tests.support.cli import run_vlab

    code, _, err = run_vlab("experiment", "matrix", str(_matrix(tmp_path, "[1, 4]")), "--out", str(out),
                            capsys=capsys)  # fmt: skip
    assert code == 2 and "holds another matrix (its matrix, cells differ); use another --out" in err
