"""Benchmark `vlab report` on a synthetic run: 1,000,000 requests x 16 token events = 16,000,000 token rows.

The run (6 closed-loop levels, 2 % failed requests without tokens, so ~15.7M token rows) is generated in a temp
folder with `vlab.testing.synth` by a separate child process (so this process stays small: a forked child inherits
its parent's RSS high-water mark), then `vlab report` runs as another child; its wall time and peak RSS
(`os.wait4` rusage of that child, ru_maxrss in KiB) are printed. Targets: ≤ 30 s and ≤ 3 GB.

    .venv/bin/python bench/bench_report.py [--requests N] [--events K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 30.0
TARGET_GB = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=16, help="Token events per successful request.")
    parser.add_argument("--keep", type=Path, help="Generate into this folder and keep it (reused when present).")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:
        from vlab.testing.synth import SynthSpec, make_run

        spec = SynthSpec(targets=[1, 2, 4, 8, 16, 32], total_requests=args.requests, n_events=args.events)
        make_run(args.generate_only, spec)
        return 0
    with tempfile.TemporaryDirectory(prefix="vlab-bench-") as tmp:
        run = args.keep or Path(tmp) / "run"
        t0 = time.perf_counter()
        if not (run / "run.json").exists():
            gen = [sys.executable, __file__, "--requests", str(args.requests), "--events", str(args.events)]
            subprocess.run([*gen, "--generate-only", str(run)], check=True)
        gen_s = time.perf_counter() - t0
        with (run / "tokens.csv").open("rb") as fh:
            token_rows = sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 24), b"")) - 1
        sizes = {p.name: p.stat().st_size for p in run.glob("*.csv")}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "vlab", "report", str(run)], cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss_gb = usage.ru_maxrss * 1024 / 1e9  # Linux: KiB
        if proc.returncode != 0:
            return proc.returncode
        html_mb = (run / "index.html").stat().st_size / 1e6
    rows = [
        ("requests", f"{args.requests:,}"),
        ("token rows", f"{token_rows:,}"),
        ("requests.csv", f"{sizes['requests.csv'] / 1e6:,.0f} MB"),
        ("tokens.csv", f"{sizes['tokens.csv'] / 1e6:,.0f} MB"),
        ("generation (untimed)", f"{gen_s:.1f} s"),
        ("vlab report wall time", f"{wall:.1f} s (target ≤ {TARGET_S:g} s)"),
        ("vlab report peak RSS", f"{rss_gb:.2f} GB (target ≤ {TARGET_GB:g} GB)"),
        ("index.html", f"{html_mb:.2f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    ok = wall <= TARGET_S and rss_gb <= TARGET_GB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
