"""`vlab sweep --adaptive`: find the highest load that meets the scenario's SLOs with few levels.

Each probe is one level (the scenario's first stage, at another load) run as its own short Locust run in
`RUN_DIR/probe-<n>-<load>/`, judged like the report judges a level: it is *good* when at least
`analysis.summary.SLO_ATTAINMENT` of its requests meet every SLO set. The search doubles the load from the
first stage's value until a probe fails (coarse), then bisects between the last good and the first bad load until
they are adjacent (users) or within 10% (rates). The answer — that load and its goodput — goes to the terminal,
`RUN_DIR/adaptive.json`, and a comparison report of all probes (`RUN_DIR/index.html`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from vlab.core.errors import ConfigError
from vlab.core.scenario import Scenario

RATE_PRECISION = 1.10
"""Open loop: bisection stops when first-bad / last-good ≤ this ratio."""


@dataclass
class Probe:
    target: float
    good: bool
    slo_fraction: float
    goodput_req_per_s: float
    output_tok_per_s: float
    ttft_p50_ms: float
    run_dir: str


def _probe_scenario(scenario: Scenario, target: float) -> dict:
    data = scenario.model_dump(mode="json")
    stage = dict(data["load"]["stages"][0])
    stage["users" if not scenario.load.open_loop else "rate"] = int(target) if not scenario.load.open_loop else target
    data["load"]["stages"] = [stage]
    data["name"] = f"{scenario.name}-probe"
    return data


def _judge(run_dir: Path, target: float) -> Probe:
    from analysis.pipeline import analyze
    from analysis.summary import SLO_ATTAINMENT

    row = analyze(run_dir).table.iloc[-1]
    fraction = float(row["slo_fraction"])
    good = bool(row["n_measured"] > 0 and math.isfinite(fraction) and fraction >= SLO_ATTAINMENT)
    return Probe(
        target=target,
        good=good,
        slo_fraction=fraction,
        goodput_req_per_s=float(row["goodput_req_per_s"]),
        output_tok_per_s=float(row["output_tok_per_s"]),
        ttft_p50_ms=float(row["ttft_p50"]),
        run_dir=str(run_dir),
    )


def next_target(good: list[float], bad: list[float], start: float, open_loop: bool) -> float | None:
    """The next load to probe, or None when the search is done (pure function of the results so far)."""
    if not bad:
        return start if not good else max(good) * 2
    hi = min(bad)
    lo = max((g for g in good if g < hi), default=0.0)
    if open_loop:
        if lo > 0 and hi / lo <= RATE_PRECISION:
            return None
        return (lo + hi) / 2 if lo > 0 else hi / 2
    if hi - lo <= 1:
        return None
    return float((int(lo) + int(hi)) // 2) if lo > 0 else float(max(1, int(hi) // 2))


def adaptive_search(
    scenario: Scenario, run_dir: Path, *, host: str | None, processes: int = 0, max_probes: int = 10
) -> tuple[Probe | None, list[Probe]]:
    """Run probes until the highest SLO-meeting load is known (or `max_probes` ran); return it and every probe."""
    from vlab.commands.runner import run_locust
    from vlab.core.scenario import load_scenario

    if not scenario.slo.is_set():
        raise ConfigError("adaptive mode needs at least one SLO in the scenario (slo: {ttft_ms: ..., ...})")
    open_loop = scenario.load.open_loop
    start = scenario.load.stages[0].target
    probes: list[Probe] = []
    while len(probes) < max_probes:
        good = [p.target for p in probes if p.good]
        bad = [p.target for p in probes if not p.good]
        target = next_target(good, bad, start, open_loop)
        if target is None or target < (0.01 if open_loop else 1):
            break
        label = f"{target:g}{'rps' if open_loop else 'u'}"
        probe_dir = run_dir / f"probe-{len(probes) + 1}-{label}"
        probe_dir.mkdir(parents=True, exist_ok=True)
        path = probe_dir / "scenario.yaml"
        path.write_text(yaml.safe_dump(_probe_scenario(scenario, target), sort_keys=False))
        print(f"adaptive: probe {len(probes) + 1}: {target:g} {'req/s' if open_loop else 'users'}", flush=True)
        run_locust(load_scenario(path), path, probe_dir, host=host, processes=processes)
        probe = _judge(probe_dir, target)
        probes.append(probe)
        verdict = "meets" if probe.good else "misses"
        print(
            f"adaptive: {target:g} {verdict} the SLO ({probe.slo_fraction:.0%} of requests), goodput "
            f"{probe.goodput_req_per_s:.2f} req/s, p50 TTFT {probe.ttft_p50_ms:.0f} ms",
            flush=True,
        )
    passing = [p for p in probes if p.good]
    best = max(passing, key=lambda p: p.target) if passing else None
    result = {"best": asdict(best) if best else None, "probes": [asdict(p) for p in probes]}
    (run_dir / "adaptive.json").write_text(json.dumps(result, indent=2) + "\n")
    return best, probes
