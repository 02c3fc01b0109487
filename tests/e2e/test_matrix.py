"""A two-cell server-flag matrix against real vLLM: cpu-smollm2 with max_num_seqs 1 and 4, each server started on
a free port and stopped in turn, the same tiny load (1 then 4 users) against both, one comparison with the Pareto
view; run again, it skips both cells. About 2-3 minutes on the 2-core machine, most of it the two server starts.

It starts its own servers (the flags differ from the shared one's), so it does not use VLAB_TEST_BASE_URL."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.pareto import pareto_front, points
from analysis.pipeline import analyze
from vlab.commands.matrix import MATRIX_JSON, run_matrix
from vlab.core.runfolder import SERVER_METRICS_CSV, read_run_meta

pytestmark = pytest.mark.e2e
ONE, FOUR = "cpu-smollm2.max_num_seqs-1", "cpu-smollm2.max_num_seqs-4"


def test_two_configurations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "loads.yaml").write_text(
        "name: matrix-e2e\nload:\n  stages: [{users: 1, duration: 6s}, {users: 4, duration: 6s}]\n  warmup_s: 1\n"
        "data: {prompt_tokens: 32, output_tokens: 16, ignore_eos: true}\n"
    )
    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: e2e\nscenario: loads.yaml\nprofiles: [cpu-smollm2]\noverrides: {max_num_seqs: [1, 4]}\n")
    out = tmp_path / "out"
    code = run_matrix(matrix, out)
    text = capsys.readouterr().out
    assert code == 0, text[-3000:]
    state = {c["name"]: c for c in json.loads((out / MATRIX_JSON).read_text())["cells_state"]}
    assert [state[n]["status"] for n in (ONE, FOUR)] == ["done", "done"]
    assert state[ONE]["url"] != state[FOUR]["url"]  # two servers, each on its own free port

    for name, seqs in ((ONE, 1), (FOUR, 4)):
        cell = out / "cells" / name
        assert read_run_meta(cell).status == "completed" and read_run_meta(cell).server_profile == name
        assert json.loads((cell / "server.json").read_text())["max_num_seqs"] == seqs
        running = pd.read_csv(cell / SERVER_METRICS_CSV)["running"].max()  # the server's own gauge
        assert running <= seqs, (name, running)
        if seqs == 4:
            assert running >= 2, running  # the flag really let requests batch

    summaries = [analyze(out / "cells" / n) for n in (ONE, FOUR)]
    ttft = {s.run.meta.server_profile: s.table.set_index("target").loc[4.0, "ttft_p50"] for s in summaries}
    assert ttft[ONE] > 1.5 * ttft[FOUR], ttft  # one sequence at a time: 4 users queue for their first token
    front = pareto_front(points(summaries))
    assert any(p.config == FOUR and p.target == 4 for p in front)  # batching 4 gives the most throughput
    assert "Pareto front (output tok/s, tok/s per request): " in text
    page = (out / "compare.html").read_text()
    assert 'id="pareto-front-table"' in page and ONE in page and FOUR in page

    assert run_matrix(matrix, out) == 0  # resumed: nothing left to run, no server started
    again = capsys.readouterr().out
    assert "2 done before, 0 to run" in again and "starting the server" not in again
