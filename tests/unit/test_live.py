"""The LLM console in Locust's web UI (`vlab.locust.webui`): the tail of requests.csv (unit), then headless Debian
chromium driving the real UI against the local vLLM: a ramp started through Locust's form, the live charts, the numbers
shown checked against the records on disk, the report link, and the same with `--processes 2`.

Screenshots land in test-artifacts/webui-*.png; with VLAB_WEBUI_DOCS_SCREENSHOT=1 the LLM page's screenshot is also
written to docs/img/webui-llm-tab.png (the README's picture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlab.core.paths import REPO_ROOT
from vlab.core.records import RequestRecord
from vlab.core.runfolder import REQUESTS_CSV
from vlab.locust.live import BUCKET_S, CsvTail, RecordTail  # not vlab.locust.webui: importing Locust would patch pytest

ARTIFACTS = REPO_ROOT / "test-artifacts"
LOCUSTFILE = str(REPO_ROOT / "locustfiles" / "llm.py")
SCENARIO = str(REPO_ROOT / "scenarios" / "webui-smoke.yaml")
DOCS_IMG = REPO_ROOT / "docs" / "img" / "webui-llm-tab.png"


# ------------------------------------------------------------------------------------------------------ unit: tail
def _record(i: int, *, ok: bool = True, ttft: float = 10.0, t_start: float = 1000.0, endpoint: str = "chat") -> str:
    rec = RequestRecord(
        request_id=f"n-{i}", level=0, level_target=2.0, user=0, node="n", endpoint=endpoint, t_start_s=t_start,
        queue_wait_ms=0.0, ttft_ms=ttft, e2e_ms=ttft + 150.0, itl_mean_ms=10.0, tpot_ms=10.0, n_events=16,
        prompt_tokens=32, completion_tokens=16, prompt_tokens_requested=32, max_tokens=16, finish_reason="length",
        multi_token=False, ok=ok, status=200 if ok else 500, error_kind="" if ok else "http",
        error="" if ok else 'boom, "quoted"', prefix_id=-1, retrieval_ms=float("nan"),
    )  # fmt: skip
    return rec.csv_line()


def test_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / REQUESTS_CSV
    tail = CsvTail(path)
    assert tail.read_new() == []  # no file yet
    line = _record(0)
    path.write_text(RequestRecord.csv_header() + line[:20])
    assert tail.read_new() == [] and tail.header == RequestRecord.columns()
    with path.open("a") as fh:
        fh.write(line[20:] + _record(1, ok=False))
    rows = tail.read_new()
    assert [r[0] for r in rows] == ["n-0", "n-1"]
    assert rows[1][RequestRecord.columns().index("error")] == 'boom, "quoted"'
    assert tail.read_new() == [] and tail.offset == path.stat().st_size


def test_record_tail_series_and_exact_table(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"started_at": 1000.0}))
    ttfts = [float(x) for x in range(1, 41)]
    lines = [_record(i, ttft=t, t_start=1000.0 + i * 0.1) for i, t in enumerate(ttfts)]
    (tmp_path / REQUESTS_CSV).write_text(RequestRecord.csv_header() + "".join(lines) + _record(99, ok=False))
    tail = RecordTail(tmp_path)
    assert tail.poll() == 41
    run = {r["metric"]: r for r in tail.summaries()["run"]}
    assert run["ttft"]["n"] == 40
    assert run["ttft"]["p50"] == pytest.approx(np.percentile(ttfts, 50))
    assert run["ttft"]["p999"] == pytest.approx(np.percentile(ttfts, 99.9))
    series = tail.series(until_s=2000.0)
    assert series["t"][0] == BUCKET_S
    first = tail.buckets[int(1000.0 // BUCKET_S)]
    assert sum(b.n_ok for b in tail.buckets.values()) == 40  # each successful request once, in the slot it ended
    assert series["out_tok_s"][0] == pytest.approx(16 * first.n_ok / BUCKET_S)
    assert series["ttft_p50"][0] == pytest.approx(np.percentile(first.ttft, 50))
    assert tail.poll() == 0


# ------------------------------------------------------------------------------------------------- e2e + browser
