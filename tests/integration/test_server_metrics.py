"""Server-side metrics: parsing recorded /metrics samples (this vLLM and older names), the sampler process (no
/metrics, a fake server, stop behaviour), the report's alignment of server series with client records, and two
end-to-end runs against real vLLM servers (the session one, and the tiny-KV profile that must queue or preempt)."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analysis.pipeline import analyze
from analysis.report import build_report
from analysis.server_metrics import load_server_metrics
from vlab.telemetry.server_metrics import (
    COLUMNS,
    CSV_HEADER,
    METRICS_CSV,
    METRICS_JSON,
    cache_summary,
    parse_metrics,
    start_sampler,
)

METRICS_FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
RUN_FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
CURRENT = METRICS_FIXTURES / "vllm-0.32.0-busy.txt"
OLD = METRICS_FIXTURES / "vllm-old-names.txt"


# ------------------------------------------------------------------------------------------------------ parsing
def _full_parse_sum(text: str, name: str) -> float:
    """Independent reference: parse everything (no prefilter) and sum the samples called `name`."""
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def test_parse_current_vllm_sample() -> None:
    text = CURRENT.read_text()
    p = parse_metrics(text)
    assert p.names["kv_cache_usage"] == "vllm:kv_cache_usage_perc"
    assert p.names["itl"] == "vllm:inter_token_latency_seconds"
    assert p.names["prefix_hits"] == "vllm:prefix_cache_hits_total"
    assert set(p.values) == set(COLUMNS), "every canonical column is exported by this vLLM"
    assert p.values["running"] == 6.0 and p.values["waiting"] == 0.0
    assert 0 < p.values["kv_cache_usage"] < 1
    for col, name in (
        ("prefix_queries", "vllm:prefix_cache_queries_total"),
        ("generation_tokens", "vllm:generation_tokens_total"),
        ("ttft_sum", "vllm:time_to_first_token_seconds_sum"),
        ("ttft_count", "vllm:time_to_first_token_seconds_count"),
        ("e2e_count", "vllm:e2e_request_latency_seconds_count"),
        ("queue_time_sum", "vllm:request_queue_time_seconds_sum"),
    ):
        assert p.values[col] == pytest.approx(_full_parse_sum(text, name)), col
    cache = cache_summary(p.cache_config)
    assert cache == {"block_size": 128, "num_blocks": 728, "kv_capacity_tokens": 93184, "prefix_caching": True}


def test_parse_old_names_and_sums_over_engines() -> None:
    p = parse_metrics(OLD.read_text())
    assert p.names["kv_cache_usage"] == "vllm:gpu_cache_usage_perc"
    assert p.names["prefix_queries"] == "vllm:gpu_prefix_cache_queries_total"
    assert p.names["prefix_hits"] == "vllm:gpu_prefix_cache_hits_total"
    assert p.names["itl"] == "vllm:time_per_output_token_seconds"
    assert p.values["running"] == 8 and p.values["waiting"] == 3  # summed over engine 0 and 1
    assert p.values["kv_cache_usage"] == pytest.approx(0.375)  # a fraction: averaged over engines
    assert p.values["preemptions"] == 12
    assert (p.values["prefix_queries"], p.values["prefix_hits"]) == (20000, 15000)
    assert (p.values["itl_sum"], p.values["itl_count"]) == (pytest.approx(285.75), 9525)
    assert (p.values["ttft_sum"], p.values["ttft_count"]) == (pytest.approx(9.0), 75)
    assert "vllm:cpu_cache_usage_perc" not in p.names.values()  # swap-space usage is not the KV cache
    assert cache_summary(p.cache_config)["kv_capacity_tokens"] == 1024 * 16


def test_newest_name_wins_over_alias() -> None:
    text = (
        "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.5\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.9\n"
    )
    p = parse_metrics(text)
    assert p.values["kv_cache_usage"] == 0.5 and p.names["kv_cache_usage"] == "vllm:kv_cache_usage_perc"


def test_non_vllm_metrics_are_not_vllm() -> None:
    assert not parse_metrics("# TYPE up gauge\nup 1\n").is_vllm


# ---------------------------------------------------------------------------------------------- sampler process
class _Handler(http.server.BaseHTTPRequestHandler):
    body: bytes = b""
    status = 200
    seen_auth: list[str] = []  # noqa: RUF012 — shared on purpose

    def do_GET(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        if self.path != "/metrics" or self.status != 200:
            self.send_error(404 if self.status == 200 else self.status)
            return
        body = self.body_now()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body_now(self) -> bytes:
        return self.body

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_Handler]]]:
    """A tiny HTTP server in a thread; the test picks the handler's status and body."""

    class Handler(_Handler):
        seen_auth: list[str] = []  # noqa: RUF012

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    finally:
        server.shutdown()
        server.server_close()


def _wait_for(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_server_without_metrics_gives_a_note(fake_server, tmp_path: Path) -> None:
    url, handler = fake_server
    handler.status = 404
    t0 = time.monotonic()
    sampler = start_sampler(url, tmp_path, 0.1, None)
    assert time.monotonic() - t0 < 0.5, "start_sampler must return at once"
    _wait_for(tmp_path / METRICS_JSON)
    pid = sampler.pid
    sampler.stop()
    note = json.loads((tmp_path / METRICS_JSON).read_text())
    assert note["available"] is False and "404" in note["reason"]
    assert not (tmp_path / METRICS_CSV).exists()
    assert pid is not None and _group_gone(pid)
    series = load_server_metrics(tmp_path)
    assert not series.available and "404" in series.reason


def test_server_answering_other_metrics_gives_a_note(fake_server, tmp_path: Path) -> None:
    url, handler = fake_server
    handler.body = b"# TYPE up gauge\nup 1\n"
    sampler = start_sampler(url, tmp_path, 0.1, None)
    _wait_for(tmp_path / METRICS_JSON)
    sampler.stop()
    note = json.loads((tmp_path / METRICS_JSON).read_text())
    assert note["available"] is False and "no vLLM metrics" in note["reason"]


def test_unreachable_server_gives_a_note(tmp_path: Path) -> None:
    from vlab.client.http import find_free_port

    sampler = start_sampler(f"http://127.0.0.1:{find_free_port()}", tmp_path, 0.1, None)
    _wait_for(tmp_path / METRICS_JSON)
    sampler.stop()
    assert "no answer" in json.loads((tmp_path / METRICS_JSON).read_text())["reason"]


def test_sampler_records_a_time_series_and_stops_cleanly(fake_server, tmp_path: Path) -> None:
    url, handler = fake_server
    base = CURRENT.read_text()
    counter = {"n": 0}

    def body_now(self: _Handler) -> bytes:  # preemptions grow by one per scrape
        counter["n"] += 1
        return base.replace(
            'vllm:num_preemptions_total{engine="0",model_name="smollm2"} 0.0',
            f'vllm:num_preemptions_total{{engine="0",model_name="smollm2"}} {counter["n"]}.0',
        ).encode()

    handler.body_now = body_now  # type: ignore[method-assign]
    before = time.time()
    sampler = start_sampler(url, tmp_path, 0.1, "secret-key")
    time.sleep(1.5)
    pid = sampler.pid
    sampler.stop()
    sampler.stop()  # idempotent
    after = time.time()
    assert pid is not None and _group_gone(pid)
    lines = (tmp_path / METRICS_CSV).read_text().splitlines()
    assert lines[0] == CSV_HEADER
    frame = pd.read_csv(tmp_path / METRICS_CSV)
    assert len(frame) >= 5
    t = frame["t_s"].to_numpy()
    assert (np.diff(t) > 0).all() and before <= t[0] and t[-1] <= after
    assert np.median(np.diff(t)) == pytest.approx(0.1, abs=0.05)
    assert (np.diff(frame["preemptions"].to_numpy()) == 1).all()
    assert (frame["running"] == 6).all()
    note = json.loads((tmp_path / METRICS_JSON).read_text())
    assert note["available"] and note["kv_capacity_tokens"] == 93184 and note["samples"] == len(frame)
    assert note["cost"]["cpu_ms_mean"] > 0
    assert set(handler.seen_auth) == {"Bearer secret-key"}
    assert not (tmp_path / "server_metrics.log").exists(), "an empty sampler log is removed"


# ------------------------------------------------------------------------------------------------------- report
def _synthetic_metrics(run: Path, overhead_ms: float = 10.0) -> None:
    """server_metrics.csv for a fixture run: one sample every 0.5 s over its levels. Waiting > 0 from level 2 on,
    KV usage 97 % at the last level, 12 preemptions in the last level, prefix hits 50 % of queries; the TTFT
    histogram holds every successful client request's TTFT minus `overhead_ms`, observed at its first token."""
    meta = json.loads((run / "run.json").read_text())
    levels = pd.read_csv(run / "levels.csv")
    req = pd.read_csv(run / "requests.csv", keep_default_na=False, na_values=[""])
    ok = req[req["ok"] == 1]
    first = ok["t_start_s"] + ok["ttft_ms"] / 1000
    end = ok["t_start_s"] + ok["e2e_ms"] / 1000
    t = np.arange(levels["start_s"].min() - 0.25, levels["end_s"].max() + 0.5, 0.5)
    rows = []
    for ts in t:
        lv = levels[(levels["start_s"] <= ts) & (ts < levels["end_s"])]
        idx = int(lv["level"].iat[0]) if len(lv) else -1
        last = idx == int(levels["level"].max())
        seen = first <= ts
        done = end <= ts
        rows.append(
            {
                "t_s": ts,
                "scrape_ms": 5.0,
                "cpu_ms": 1.0,
                "running": float(max(idx, 0) + 1),
                "waiting": float(max(idx - 1, 0)),
                "kv_cache_usage": 0.97 if last else 0.1 * (idx + 1),
                "preemptions": float(min(12, max(0, (ts - levels["start_s"].iat[-1]) * 2))) if last else 0.0,
                "prefix_queries": 1000.0 * len(rows),
                "prefix_hits": 500.0 * len(rows),
                "prompt_tokens": 100.0 * len(rows),
                "generation_tokens": 50.0 * len(rows),
                "ttft_sum": float(((ok["ttft_ms"][seen] - overhead_ms) / 1000).sum()),
                "ttft_count": float(seen.sum()),
                "itl_sum": 0.01 * len(rows),
                "itl_count": float(len(rows)),
                "e2e_sum": float((ok["e2e_ms"][done] / 1000).sum()),
                "e2e_count": float(done.sum()),
                "queue_time_sum": 0.0,
                "queue_time_count": float(done.sum()),
            }
        )
    pd.DataFrame(rows)[["t_s", "scrape_ms", "cpu_ms", *COLUMNS]].to_csv(run / METRICS_CSV, index=False)
    note = {"available": True, "kv_capacity_tokens": 3072, "block_size": 128, "num_blocks": 24, "names": {}}
    (run / METRICS_JSON).write_text(json.dumps(note))
    assert meta["format"] in (1, 2)


def test_report_aligns_server_series_with_levels(run_copy) -> None:
    run = run_copy("closed")
    _synthetic_metrics(run, overhead_ms=10.0)
    s = analyze(run)
    srv = s.server
    assert srv.available
    t = srv.table
    assert list(t["max_waiting"]) == [0, 0, 1, 2]
    assert srv.headline.first_waiting_level == 2 and srv.headline.peak_kv_usage == pytest.approx(0.97)
    assert srv.headline.peak_kv_target == 8 and srv.headline.preemptions == 12
    assert t["preemptions"].tolist()[-1] == 12 and t["preemptions"].tolist()[:3] == [0, 0, 0]
    assert srv.headline.prefix_hit_rate == pytest.approx(0.5)
    # the same requests on both sides: the difference is exactly the synthetic overhead
    measured = t[t["server_ttft_n"] > 0]
    assert len(measured) >= 3
    assert np.allclose(measured["ttft_overhead_ms"], 10.0, atol=1e-6)
    assert (measured["server_ttft_n"] == measured["client_ttft_n"]).all()
    e2e = t[t["server_e2e_n"] > 0]
    assert np.allclose(e2e["e2e_overhead_ms"], 0.0, atol=1e-6)
    text = " ".join(s.observations)
    assert "from level 2 (4 users) on" in text and "KV cache peaked at 97% of 3,072 tokens at 8 users" in text
    assert "12 preemptions (8 users: 12)" in text and "Prefix cache hit rate 50%" in text
    report = build_report([run])
    html = report.read_text()
    assert 'id="server-levels-table"' in html and 'alt="Server metrics over time"' in html
    assert json.loads((run / "summary.json").read_text())["server_metrics"]["headline"]["preemptions"] == 12


def test_report_without_server_metrics_shows_a_note(run_copy) -> None:
    run = run_copy("closed")
    html = build_report([run]).read_text()
    assert 'id="server-metrics-note"' in html and "no server_metrics.csv" in html
    (run / METRICS_JSON).write_text(json.dumps({"available": False, "reason": "GET /metrics answered HTTP 404"}))
    html = build_report([run]).read_text()
    assert "HTTP 404" in html


def test_truncated_server_metrics_csv(run_copy) -> None:
    run = run_copy("closed")
    _synthetic_metrics(run)
    text = (run / METRICS_CSV).read_text()
    (run / METRICS_CSV).write_text(text + "1800000041.0,5.0,1.0,3")
    series = load_server_metrics(run)
    assert series.available and len(series.frame) == len(text.splitlines()) - 1


def test_comparison_shows_server_headline_per_run(run_copy, tmp_path: Path) -> None:
    a, b = run_copy("closed"), run_copy("closed-b")
    _synthetic_metrics(a)
    out = build_report([a, b], tmp_path / "cmp.html")
    html = out.read_text()
    assert 'id="server-runs-table"' in html and "97.0%" in html and "no server metrics" in html
    assert 'alt="Server metrics of all runs"' in html


# ---------------------------------------------------------------------------------------------- end to end
