"""The suite itself, through its CLI: `locust -f locustfiles/llm.py --scenario FILE --headless --run-dir DIR`.

Read back from the run folder only: `requests.csv` (one row per request; `prompt_tokens` is the fake server's
request id) and `tokens.csv` (`request_id,i,t_ms`: every token event, ms since the send).
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.peers.common import REPO, ClientRequest, ToolReport, WallToMono, Workload
from bench.peers.tools.base import Capabilities, Command, aggregates_from_requests, fnum, read_csv


class Suite:
    name = "suite"
    caps = Capabilities(per_event_times=True, bounded_by="time", open_loop=True)

    def command(self, w: Workload, url: str, out: Path) -> Command:
        # spawn_rate = users: every stream starts within the first second, as the peers start theirs at once.
        scenario = (
            f"name: peers-{w.concurrency}\n"
            f"api: {{endpoint: {w.endpoint}, model: {w.model}, read_timeout_s: 120, metrics_interval_s: 0}}\n"
            f"load: {{users: {w.concurrency}, duration: {w.duration_s:g}s, spawn_rate: {w.concurrency}}}\n"
            f"data: {{prompt_tokens: {w.prompt_tokens}, output_tokens: {w.output_tokens}, "
            f"ignore_eos: {str(w.ignore_eos).lower()}}}\n"
        )
        argv = [str(REPO / ".venv/bin/python"), "-m", "locust", "-f", str(REPO / "locustfiles/llm.py"),
                "--scenario", str(out / "scenario.yaml"), "--headless", "--host", url,
                "--run-dir", str(out / "run"), "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
        # PYTHONPATH: this checkout's vlab, whatever the environment's editable install points at
        return Command(argv, env={"PYTHONPATH": str(REPO)}, files={"scenario.yaml": scenario})

    def parse(self, out: Path, clock: WallToMono) -> ToolReport:
        return parse_run_dir(out / "run", clock)


def parse_run_dir(run: Path, clock: WallToMono) -> ToolReport:
    """The suite's run folder → per-request records (its own TTFT, ITL mean, TPOT; every token event)."""
    times: dict[str, list[float]] = {}
    for row in read_csv(run / "tokens.csv"):
        times.setdefault(row["request_id"], []).append(float(row["t_ms"]))
    requests = []
    for row in read_csv(run / "requests.csv"):
        if row["error_kind"] == "cut_off":
            continue  # in flight at the run's stop: not a result (the suite's report leaves these out too)
        t_ms = times.get(row["request_id"], [])
        start = clock(float(row["t_start_s"]))
        pt = int(row["prompt_tokens"])
        ct = int(row["completion_tokens"])
        requests.append(
            ClientRequest(
                rid=pt if pt > 0 else None,
                ok=row["ok"] == "1",
                error=(row["error_kind"] + (f" {row['status']}" if row["status"] not in ("", "0", "200") else "")),
                start_mono_s=start,
                ttft_ms=fnum(row["ttft_ms"]),
                token_ms=t_ms,
                first_token_mono_s=start + t_ms[0] / 1000.0 if t_ms else None,
                last_token_mono_s=start + t_ms[-1] / 1000.0 if t_ms else None,
                itl_ms=fnum(row["itl_mean_ms"]),
                tpot_ms=fnum(row["tpot_ms"]),
                e2e_ms=fnum(row["e2e_ms"]),
                output_tokens=ct if ct >= 0 else (len(t_ms) or None),
            )
        )
    report = ToolReport(requests=requests, per_event=True)
    report.aggregates = aggregates_from_requests(requests, "run/requests.csv (per-request means)")
    # the suite's pooled ITL (every gap of every successful request), as its report prints it
    gaps = [b - a for r in requests if r.ok and r.token_ms for a, b in zip(r.token_ms, r.token_ms[1:], strict=False)]
    report.aggregates.itl_ms = sum(gaps) / len(gaps) if gaps else math.nan
    if gaps:
        report.aggregates.itl_median_ms = sorted(gaps)[len(gaps) // 2]
    report.aggregates.source = "run/requests.csv + run/tokens.csv (ITL pooled over gaps)"
    return report
