"""One command to measure the load-generating clients against the fake SSE server, on this machine.

For each client — the suite's Locust user (`locust -f locustfiles/llm.py`, headless), the asyncio + aiohttp
reference (`bench/ref_client.py`) and, with `--harness`, the suite's hot path without Locust
(`bench/stream_harness.py`, one run per `--variants` entry) — it runs, with the client pinned to core 0 and the
fake server (`vlab/testing/fake_sse_server.py`) pinned to core 1:

- bulk: the server sends as fast as flow control allows; result: token events/s received by the client;
- timed: 20 ms token interval at 50, 200 and 500 streams, staggered and lockstep; result: the ITL timing error
  |client gap − server send gap| for the same request and the same pair of token events (p50/p99/p99.9, ms).

Requests are matched to the server's send log through `usage.prompt_tokens`, which the fake server sets to its
request id. Client CPU (user+sys seconds per wall second, psutil) and server CPU are measured over the
steady-state window: [first send + warm-up, last token − 0.5 s], ending earlier if the client cut streams off at its
stop (then 0.25 s before the first cut stream's last event). Each run is one process start to end.

    .venv/bin/python bench/client_bench.py            # about 8 minutes
    .venv/bin/python bench/client_bench.py --quick    # about 2 minutes
    .venv/bin/python bench/client_bench.py --clients harness --variants kernel,user --streams 200,500
    .venv/bin/python bench/client_bench.py --clients suite,suite-inline --modes staggered,lockstep   # A/B
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CLIENT_CPU, SERVER_CPU = 0, 1  # overridden by --client-cpu / --server-cpu


@dataclass
class RunResult:
    """One client run. Times in ms; cpu as a fraction of one core; rates per second."""

    client: str
    mode: str
    streams: int
    window_s: float = math.nan
    tokens_per_s: float = math.nan
    client_cpu: float = math.nan
    server_cpu: float = math.nan
    n_gaps: int = 0
    err_p50: float = math.nan
    err_p99: float = math.nan
    err_p999: float = math.nan
    unmatched: int = 0
    cpu_us_per_token: float = math.nan
    foreign_cpu: float = math.nan
    """Busy time of other processes on the two cores (client core + server core), fraction of one core."""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------ server
class FakeServer:
    """The fake server in its own process group, pinned to SERVER_CPU."""

    def __init__(self, mode: str, interval_ms: float, workdir: Path) -> None:
        ready = workdir / f"ready-{time.monotonic_ns()}"
        with open(workdir / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [PY, str(REPO / "vlab/testing/fake_sse_server.py"), "--port", "0", "--ready-file", str(ready),
                 "--mode", mode,
                 "--interval-ms", str(interval_ms), "--cpu", str(SERVER_CPU)],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.time() + 10
        while not ready.exists() or not ready.read_text():
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("fake server did not start (see server.log)")
            time.sleep(0.05)
        time.sleep(0.02)
        self.port = int(ready.read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def events(self) -> dict[int, list[int]]:
        """Per server request id: the send time of each token event, perf_counter ns."""
        with urllib.request.urlopen(self.url + "/events", timeout=30) as resp:
            data = json.loads(resp.read())
        return {r["rid"]: r["token_ns"] for r in data["requests"] if r["complete"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


# ----------------------------------------------------------------------------------------------------------- clients
def _core_busy(core: int) -> float:
    """Seconds core `core` was busy (not idle, not iowait) since boot."""
    t = psutil.cpu_times(percpu=True)[core]
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _sample_cpu(procs: list[psutil.Process], samples: list[tuple[float, ...]], proc: subprocess.Popen) -> None:
    """Poll every 0.2 s until `proc` exits: (wall s, client cpu s, server cpu s, client core busy s, server core
    busy s)."""
    while proc.poll() is None:
        try:
            client = procs[0]
            cpu = client.cpu_times()
            total = cpu.user + cpu.system
            for child in client.children(recursive=True):
                ct = child.cpu_times()
                total += ct.user + ct.system
            st = procs[1].cpu_times()
            samples.append((time.time(), total, st.user + st.system, _core_busy(CLIENT_CPU), _core_busy(SERVER_CPU)))
        except psutil.Error:
            pass
        time.sleep(0.2)


SUITE_VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "suite": ("llm.py", {}),
    "suite-inline": ("llm.py", {"VLAB_FINISH": "inline"}),  # streams finished on the user's greenlet (pre-finisher)
    "suite-gcdefault": ("llm.py", {"VLAB_GC": "default"}),  # Python's default garbage-collector thresholds
    "sdk": ("openai_sdk.py", {}),  # the optional openai-SDK user (a comparison path)
}
"""Locust clients: the suite as shipped, A/B variants selected by environment variables, and the SDK user; each as
(locustfile in locustfiles/, extra environment)."""


def run_client(
    kind: str, server: FakeServer, streams: int, duration: float, workdir: Path, variant: str, endpoint: str
) -> tuple[list[dict], list[tuple[float, ...]]]:
    """Run one client process to completion; its requests as {rid, t_start_s, t_ms, ok} and CPU samples."""
    out = workdir / f"{kind}-{variant}-{streams}-{time.monotonic_ns()}"
    taskset = ["taskset", "-c", str(CLIENT_CPU)]
    locustfile, extra_env = SUITE_VARIANTS.get(kind, ("", {}))
    env = dict(os.environ, **extra_env)
    if kind in SUITE_VARIANTS:
        scenario = out.with_suffix(".yaml")
        scenario.write_text(
            f"name: client-bench\napi: {{endpoint: {endpoint}, read_timeout_s: 120}}\n"
            f"load: {{users: {streams}, duration: {duration}s, spawn_rate: {streams}}}\n"
            f"data: {{prompt_tokens: 16, output_tokens: 256, ignore_eos: true}}\n"
        )
        cmd = [*taskset, str(REPO / ".venv/bin/locust"), "-f", str(REPO / "locustfiles" / locustfile), "--scenario",
               str(scenario), "--host", server.url, "--headless", "--run-dir", str(out), "--only-summary",
               "--loglevel", "WARNING"]  # fmt: skip
    elif kind == "ref":
        cmd = [*taskset, PY, str(REPO / "bench/ref_client.py"), "--url", server.url, "--streams", str(streams),
               "--duration", str(duration), "--endpoint", endpoint, "--out", str(out)]  # fmt: skip
    else:
        cmd = [*taskset, PY, str(REPO / "bench/stream_harness.py"), "--url", server.url, "--streams",
               str(streams), "--duration", str(duration), "--endpoint", endpoint, "--variant", variant, "--out",
               str(out)]  # fmt: skip
    with open(workdir / "clients.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log, start_new_session=True, env=env)
    samples: list[tuple[float, ...]] = []
    try:
        _sample_cpu([psutil.Process(proc.pid), psutil.Process(server.proc.pid)], samples, proc)
        proc.wait(timeout=duration + 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{kind} client exited with {proc.returncode} (see {workdir / 'clients.log'})")
    return (_read_suite(out) if kind in SUITE_VARIANTS else _read_jsonl(out)), samples


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_suite(run_dir: Path) -> list[dict]:
    """The suite's run folder as {rid (= prompt_tokens), t_start_s, t_ms, ok}."""
    times: dict[str, list[float]] = {}
    with open(run_dir / "tokens.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            times.setdefault(row["request_id"], []).append(float(row["t_ms"]))
    out = []
    with open(run_dir / "requests.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(
                {
                    "rid": int(row["prompt_tokens"]),
                    "t_start_s": float(row["t_start_s"]),
                    "t_ms": times.get(row["request_id"], []),
                    "ok": row["ok"] == "1",
                }
            )
    return out


# ---------------------------------------------------------------------------------------------------------- analysis
def _matched(request: dict, server_log: dict[int, list[int]]) -> bool:
    """The client completed this request and saw every event the server sent for it."""
    sent = server_log.get(request["rid"])
    return bool(request["ok"]) and sent is not None and len(sent) == len(request["t_ms"])


def analyse(
    result: RunResult,
    requests: list[dict],
    samples: list[tuple[float, ...]],
    server_log: dict[int, list[int]],
    warmup_s: float,
) -> RunResult:
    """Fill `result` from one run's client records, CPU samples and the server's send log."""
    sends = [r["t_start_s"] for r in requests if r["t_ms"]]
    if not sends:
        return result
    arrivals = np.concatenate([r["t_start_s"] + np.asarray(r["t_ms"]) / 1000.0 for r in requests if r["t_ms"]])
    lo, hi = min(sends) + warmup_s, float(arrivals.max()) - 0.5
    # The window also ends before the client's own stop: streams still open then are cut (Locust stops its users
    # one by one and inspects its stack first, ~0.1–0.3 s with the hub held), which is shutdown, not steady state.
    cut_ends = [r["t_start_s"] + r["t_ms"][-1] / 1000.0 for r in requests if r["t_ms"] and not _matched(r, server_log)]
    late_cuts = [t for t in cut_ends if t > hi - 2.0]
    if late_cuts:
        hi = min(hi, min(late_cuts) - 0.25)
    result.window_s = hi - lo
    result.tokens_per_s = float(((arrivals >= lo) & (arrivals <= hi)).sum()) / result.window_s
    if len(samples) >= 2:
        s = np.asarray(samples)
        client_cpu = np.interp([lo, hi], s[:, 0], s[:, 1])
        server_cpu = np.interp([lo, hi], s[:, 0], s[:, 2])
        busy = np.interp([lo, hi], s[:, 0], s[:, 3]) + np.interp([lo, hi], s[:, 0], s[:, 4])
        foreign = (busy[1] - busy[0]) - (client_cpu[1] - client_cpu[0]) - (server_cpu[1] - server_cpu[0])
        result.foreign_cpu = max(0.0, float(foreign) / result.window_s)
        result.client_cpu = float(client_cpu[1] - client_cpu[0]) / result.window_s
        result.server_cpu = float(server_cpu[1] - server_cpu[0]) / result.window_s
        result.cpu_us_per_token = result.client_cpu / result.tokens_per_s * 1e6
    errors = []
    for r in requests:
        if not _matched(r, server_log):
            result.unmatched += bool(r["ok"])
            continue
        sent = server_log[r["rid"]]
        t_client = np.asarray(r["t_ms"])
        wall = r["t_start_s"] + t_client[1:] / 1000.0
        gaps_client = np.diff(t_client)
        gaps_server = np.diff(np.asarray(sent, dtype=np.int64)) / 1e6
        keep = (wall >= lo) & (wall <= hi)
        errors.append(np.abs(gaps_client - gaps_server)[keep])
    if errors:
        err = np.concatenate(errors)
        result.n_gaps = int(err.size)
        if err.size:
            result.err_p50, result.err_p99, result.err_p999 = (float(v) for v in np.percentile(err, [50, 99, 99.9]))
    return result


def measure(
    kind: str, variant: str, mode: str, streams: int, duration: float, workdir: Path, endpoint: str, interval_ms: float
) -> RunResult:
    server = FakeServer(mode, interval_ms, workdir)
    try:
        requests, samples = run_client(kind, server, streams, duration, workdir, variant, endpoint)
        log = server.events()
    finally:
        server.stop()
    name = kind if kind != "harness" else f"harness:{variant}"
    return analyse(RunResult(name, mode, streams), requests, samples, log, warmup_s=2.0 if mode == "bulk" else 3.0)


# ------------------------------------------------------------------------------------------------------------ output
def _fmt(value: float, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def print_table(results: list[RunResult]) -> None:
    print()
    print(f"{'client':<26}{'mode':<10}{'streams':>8}{'tok/s':>10}{'cli CPU':>9}{'µs/tok':>8}{'srv CPU':>9}"
          f"{'gaps':>9}{'err p50':>9}{'p99':>8}{'p99.9':>8}{'unmatch':>8}{'other':>7}")  # fmt: skip
    for r in results:
        print(f"{r.client:<26}{r.mode:<10}{r.streams:>8}{_fmt(r.tokens_per_s, 0):>10}{_fmt(r.client_cpu):>9}"
              f"{_fmt(r.cpu_us_per_token, 1):>8}{_fmt(r.server_cpu):>9}{r.n_gaps:>9}{_fmt(r.err_p50):>9}"
              f"{_fmt(r.err_p99):>8}{_fmt(r.err_p999):>8}{r.unmatched:>8}{_fmt(r.foreign_cpu):>7}")  # fmt: skip
    suite = {(r.mode, r.streams): r for r in results if r.client == "suite"}
    ref = {(r.mode, r.streams): r for r in results if r.client == "ref"}
    common = [k for k in suite if k in ref]
    if common:
        print("\nsuite / reference ratios (tok/s: higher is better; CPU and errors: lower is better)")
        print(f"{'mode':<10}{'streams':>8}{'tok/s':>8}{'CPU':>8}{'err p50':>9}{'p99':>8}{'p99.9':>8}")
        for key in common:
            s, f = suite[key], ref[key]
            print(f"{key[0]:<10}{key[1]:>8}{_fmt(s.tokens_per_s / f.tokens_per_s):>8}"
                  f"{_fmt(s.client_cpu / f.client_cpu):>8}{_fmt(s.err_p50 / f.err_p50):>9}"
                  f"{_fmt(s.err_p99 / f.err_p99):>8}{_fmt(s.err_p999 / f.err_p999):>8}")  # fmt: skip


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Shorter runs, 50 and 200 streams only.")
    parser.add_argument(
        "--clients", default="suite,ref", help=f"Comma list of {', '.join(SUITE_VARIANTS)}, ref, harness."
    )
    parser.add_argument("--variants", default="kernel,user", help="Harness variants (see bench/stream_harness.py).")
    parser.add_argument("--streams", default=None, help="Comma list of stream counts (default 50,200,500).")
    parser.add_argument("--modes", default="bulk,staggered,lockstep")
    parser.add_argument("--duration", type=float, default=None, help="Seconds per timed run (default 14, quick 8).")
    parser.add_argument("--bulk-streams", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--workdir", help="Keep client outputs and logs here (default: a temporary folder).")
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--server-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the child processes (their `finally`) on SIGTERM too
    global CLIENT_CPU, SERVER_CPU
    CLIENT_CPU, SERVER_CPU = args.client_cpu, args.server_cpu
    if len(os.sched_getaffinity(0)) < 2:
        print("client_bench: needs two cores (client on 0, server on 1)", file=sys.stderr)
        return 2
    duration = args.duration or (8.0 if args.quick else 14.0)
    counts = [int(x) for x in (args.streams or ("50,200" if args.quick else "50,200,500")).split(",")]
    clients: list[tuple[str, str]] = []
    for kind in args.clients.split(","):
        if kind == "harness":
            clients += [("harness", v) for v in args.variants.split(",")]
        else:
            clients.append((kind, "kernel"))
    modes = args.modes.split(",")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan = [(m, n) for m in modes if m != "bulk" for n in counts]
        if "bulk" in modes:
            plan.insert(0, ("bulk", args.bulk_streams))
        for mode, n in plan:
            for kind, variant in clients:
                t0 = time.time()
                try:
                    res = measure(kind, variant, mode, n, duration, workdir, args.endpoint, args.interval_ms)
                except RuntimeError as exc:  # one failed run must not lose the others
                    print(f"  {kind}:{variant} {mode} {n}: FAILED: {exc}", flush=True)
                    continue
                results.append(res)
                print(f"  {res.client:<20} {mode:<9} {n:>4} streams: {_fmt(res.tokens_per_s, 0):>7} tok/s, "
                      f"CPU {_fmt(res.client_cpu)}, err p99 {_fmt(res.err_p99)} ms ({time.time() - t0:.0f} s)",
                      flush=True)  # fmt: skip
        print_table(results)
        noisy = [r for r in results if r.foreign_cpu > 0.05]
        if noisy:
            print(f"\nWARNING: other processes used > 5% of the two cores in {len(noisy)} run(s) (column 'other'): "
                  "those numbers are not clean.")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
