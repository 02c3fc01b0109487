"""`vlab lab --profile P`: the whole lab on one server profile, one index page linking every experiment's report.

The experiments (`EXPERIMENTS`, one small class each; their sizes come from a lab plan, `vlab.core.lab`):

| name | what it shows | servers |
|---|---|---|
| `load` | load vs latency, closed loop: the knee and the highest level meeting the SLO | base |
| `prefill` | TTFT against prompt length at 1 user: prefill tokens/s, where prefill stops being cheap | base |
| `decode` | ITL against the number of requests decoding at once: the decode step as batches grow | base |
| `prefix` | a long shared prefix with prefix caching on and off | base, noprefix |
| `kv` | the same load with the full KV cache and a small budget (a 6 GB card's): queueing, preemption; and the
  original lab's test, identical prompts at once | base, kv_budget |
| `ladder` | the same load on each model of the size ladder | ladder |
| `crosscheck` | `vllm bench serve --max-concurrency C` against a suite level of C users, same workload | base |

Servers are started by the lab, in their own process groups, and stopped whatever happens; with `co_host` (one GPU,
several servers sized by their own KV budgets) all of them start at once and each experiment runs while the others
idle. Every run folder gets `server.json` (the profile's facts: model shape, dummy weights, KV budget) and its report;
each experiment a comparison page; the lab `index.html` and `lab.json` (every run, its command, server start times,
and the headline numbers). `--dry-run` lists the runs and how long they should take; `--report-only DIR` rebuilds
the reports of a lab folder (e.g. one copied back from a GPU host).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from vlab.commands.helptext import plain
from vlab.core.errors import UserError
from vlab.core.jsonsafe import json_safe
from vlab.core.lab import LabPlan, Sizing, load_lab_plan
from vlab.core.paths import REPORTS_DIR
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, new_run_dir
from vlab.core.scenario import load_scenario, parse_scenario

LAB_JSON = "lab.json"
IDENTICAL_WORDS = "the model reads this same prompt for every request of the test and answers at a fixed length".split()


@dataclass
class RunSpec:
    """One run of the lab: a scenario (or a `vllm bench serve` call) against one profile's server."""

    experiment: str
    label: str
    profile: str
    scenario: dict[str, Any]
    kind: str = "suite"
    """`suite` (a Locust run of the scenario) or `vllm_bench` (the same workload through `vllm bench serve`)."""
    bench: dict[str, int] = field(default_factory=dict)
    """vllm_bench: concurrency, prompts, input_len, output_len."""
    files: dict[str, str] = field(default_factory=dict)
    """Files written into the run folder before the run (name → text); `{run_dir}` in the scenario names it."""

    @property
    def folder(self) -> str:
        return f"{self.experiment}/{self.label}-{self.profile}"


def _scenario(
    name: str, stages: list[dict[str, Any]], prompt: Any, output: int, plan: LabPlan, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt_tokens": prompt, "output_tokens": output, "ignore_eos": True}
    data.update(extra.pop("data", {}))
    load: dict[str, Any] = {"stages": stages, "drain": True, "steady_state": "auto"}
    load.update(extra.pop("load", {}))
    return {
        "name": name,
        "description": extra.pop("description", ""),
        "api": {"endpoint": "completions", "metrics_interval_s": plan.metrics_interval_s, "read_timeout_s": 300},
        "load": load,
        "data": data,
        "slo": extra.pop("slo", {}),
    }


def _stages(users: list[int], sizing: Sizing) -> list[dict[str, Any]]:
    return [
        {"users": u, "duration": sizing.min_s, "requests": sizing.requests(u), "max_duration": sizing.cap_s}
        for u in users
    ]


class Experiment:
    """One question of the lab: the runs that answer it."""

    name: ClassVar[str]
    title: ClassVar[str]
    question: ClassVar[str]

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        raise NotImplementedError


EXPERIMENTS: dict[str, type[Experiment]] = {}


def experiment(cls: type[Experiment]) -> type[Experiment]:
    EXPERIMENTS[cls.name] = cls
    return cls


@experiment
class Load(Experiment):
    name, title = "load", "Load vs latency"
    question = (
        "How do TTFT, ITL and throughput change from 1 user to many: where is the knee, which load meets the SLO?"
    )

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.load
        scenario = _scenario("lab-load", _stages(s.users, s), s.prompt_tokens, s.output_tokens, plan, slo=s.slo,
                             description=Load.question)  # fmt: skip
        return [RunSpec("load", "closed", base, scenario)]


@experiment
class Prefill(Experiment):
    name, title = "prefill", "Prefill: TTFT against prompt length"
    question = (
        "How long does prefill take as the prompt grows, at 1 user: prefill tokens/s, and where it stops being cheap?"
    )

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.prefill
        n = s.per_length * len(s.lengths)
        scenario = _scenario(
            "lab-prefill", [{"users": 1, "requests": n, "duration": 1, "max_duration": 600}],
            {"dist": "choice", "values": s.lengths}, s.output_tokens, plan, description=Prefill.question,
            load={"steady_state": "off"},
        )  # fmt: skip
        return [RunSpec("prefill", "lengths", base, scenario)]


@experiment
class Decode(Experiment):
    name, title = "decode", "Decode: ITL against the batch"
    question = "How long is one decode step as more requests decode at once (ITL against the running batch)?"

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.decode
        scenario = _scenario("lab-decode", _stages(s.batches, s), s.prompt_tokens, s.output_tokens, plan,
                             description=Decode.question)  # fmt: skip
        return [RunSpec("decode", "batches", base, scenario)]


@experiment
class Prefix(Experiment):
    name, title = "prefix", "Prefix caching on and off"
    question = "What does automatic prefix caching buy in TTFT when every prompt starts with the same long prefix?"

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.prefix
        scenario = _scenario(
            "lab-prefix", _stages(s.users, s), s.shared_tokens + s.unique_tokens, s.output_tokens, plan,
            data={"shared_prefix": {"tokens": s.shared_tokens, "fraction": 1.0, "count": 1}},
            description=Prefix.question,
        )  # fmt: skip
        profiles = [base, *([plan.profiles.noprefix] if plan.profiles.noprefix else [])]
        return [RunSpec("prefix", "shared", p, scenario) for p in profiles]


@experiment
class Kv(Experiment):
    name, title = "kv", "KV-cache pressure"
    question = (
        "What happens when the KV cache cannot hold the batch (a 6 GB card's budget against the full one): "
        "queueing, preemption, latency? And the original lab's test: identical prompts sent at once."
    )

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.kv
        load = _scenario("lab-kv", _stages(s.users, s), s.prompt_tokens, s.output_tokens, plan, description=Kv.question)
        identical = _scenario(
            "lab-kv-identical", [{"users": s.identical_users, "requests": s.identical_users, "duration": 1}],
            s.prompt_tokens, s.identical_output_tokens, plan,
            data={"dataset": {"path": "{run_dir}/identical.jsonl", "format": "jsonl"}},
            load={"steady_state": "off", "spawn_rate": 1000},
            description="The original lab's test: identical prompts sent at once, fixed output length.",
        )  # fmt: skip
        text = " ".join(IDENTICAL_WORDS[i % len(IDENTICAL_WORDS)] for i in range(s.prompt_tokens))
        files = {"identical.jsonl": json.dumps({"prompt": text}) + "\n"}
        profiles = [base, *([plan.profiles.kv_budget] if plan.profiles.kv_budget else [])]
        return [
            *(RunSpec("kv", "load", p, load) for p in profiles),
            *(RunSpec("kv", "identical", p, identical, files=files) for p in profiles),
        ]


@experiment
class Ladder(Experiment):
    name, title = "ladder", "The model-size ladder"
    question = "How do latency and throughput change with the model's size at the same load?"

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.ladder
        scenario = _scenario("lab-ladder", _stages(s.users, s), s.prompt_tokens, s.output_tokens, plan,
                             description=Ladder.question)  # fmt: skip
        return [RunSpec("ladder", "same-load", p, scenario) for p in plan.profiles.ladder]


@experiment
class Crosscheck(Experiment):
    name, title = "crosscheck", "The suite against vllm bench serve"
    question = "Do the suite, vLLM's own benchmark and the server's counters agree at GPU rates?"

    @staticmethod
    def runs(plan: LabPlan, base: str) -> list[RunSpec]:
        s = plan.crosscheck
        out: list[RunSpec] = []
        for c in s.concurrency:
            n = c * s.prompts_per_user
            scenario = _scenario(
                f"lab-crosscheck-c{c}", [{"users": c, "requests": n, "duration": 1, "max_duration": 600}],
                s.prompt_tokens, s.output_tokens, plan, load={"steady_state": "off", "drain": True},
                description=Crosscheck.question,
            )  # fmt: skip
            out.append(RunSpec("crosscheck", f"suite-c{c}", base, scenario))
            out.append(RunSpec("crosscheck", f"vllm-bench-c{c}", base, {}, kind="vllm_bench",
                               bench={"concurrency": c, "prompts": n, "input_len": s.prompt_tokens,
                                      "output_len": s.output_tokens}))  # fmt: skip
        return out


# --------------------------------------------------------------------------------------------------- planning
DEFAULT_ORDER = ("load", "prefill", "decode", "kv", "prefix", "ladder", "crosscheck")  # the check on the tool last
"""The base profile's experiments first: if a GPU lease ends early, the ones most of the lab rests on are done."""


def plan_runs(plan: LabPlan, base: str, only: list[str] | None) -> list[RunSpec]:
    names = only or [n for n in DEFAULT_ORDER if n in EXPERIMENTS]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        known = ", ".join(EXPERIMENTS)
        raise UserError(f"--only: unknown experiment(s) {', '.join(unknown)} (known: {known})", exit_code=2)
    return [spec for name in names for spec in EXPERIMENTS[name].runs(plan, base)]


def estimate_s(spec: RunSpec, plan: LabPlan) -> float:
    """A rough duration of one run (dry run only): per level, the longer of its shortest time and its requests'
    sequential share of E2E at the plan's assumed speeds, plus the run's fixed overhead."""
    a = plan.assume
    if spec.kind == "vllm_bench":
        b = spec.bench
        per_request = b["input_len"] / a.prefill_tok_s + b["output_len"] * a.itl_ms / 1000.0
        return a.run_overhead_s + b["prompts"] / b["concurrency"] * per_request
    sc = parse_scenario(json.loads(json.dumps(spec.scenario).replace("{run_dir}", ".")), spec.folder)
    prompt = sc.data.prompt_tokens.bounds()
    per_request = (sum(prompt) / 2) / a.prefill_tok_s + sc.data.output_tokens.bounds()[1] * a.itl_ms / 1000.0
    total = a.run_overhead_s
    for st in sc.load.stages:
        users = st.users or 1
        need = (st.requests or 0) / users * per_request
        total += min(max(st.min_s, need), st.cap_s) + per_request  # + the drain
    return total


def describe_plan(plan: LabPlan, base: str, runs: list[RunSpec]) -> list[str]:
    profiles = sorted({r.profile for r in runs})
    starts = plan.assume.start_s if plan.co_host else plan.assume.start_s * len(profiles)
    lines = [f"lab plan {plan.name} on {base}: {len(runs)} runs, {len(profiles)} server(s) "
             f"({'all at once' if plan.co_host else 'one at a time'}): {', '.join(profiles)}"]  # fmt: skip
    total = starts
    for r in runs:
        est = estimate_s(r, plan)
        total += est
        what = "vllm bench serve" if r.kind == "vllm_bench" else f"{len(r.scenario['load']['stages'])} level(s)"
        lines.append(f"  {r.folder:<48} {what:<18} ~{est:5.0f} s")
    lines.append(f"  server start(s) ~{starts:.0f} s; total ~{total / 60:.1f} min (rough: the plan's `assume` speeds)")
    return lines


# ---------------------------------------------------------------------------------------------------- running
class Servers:
    """The lab's servers: started (all at once, or one profile at a time) and stopped whatever happens."""

    def __init__(self, lab_dir: Path) -> None:
        self.lab_dir = lab_dir
        self.running: dict[str, Any] = {}
        self.started: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        """Servers that did not become healthy: profile → why."""

    def start(self, names: list[str]) -> None:
        from server.launcher import DEFAULT_HEALTH_TIMEOUT_S, launch_server
        from server.profile import load_profile
        from vlab.client.http import find_free_port

        launched = []
        for name in names:
            if name in self.running:
                continue
            profile = load_profile(name)
            log = self.lab_dir / "servers" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            server = launch_server(profile, port=find_free_port(), log_path=log)
            self.running[name] = server
            launched.append((name, server))
            print(f"lab: starting {name} on {server.base_url}", flush=True)
        for name, server in launched:  # servers that start together share the CPU: each gets twice the usual time
            try:
                server.startup_s = server.wait_healthy(2 * DEFAULT_HEALTH_TIMEOUT_S)
            except UserError as exc:
                if exc.exit_code == 130 or len(launched) == 1:
                    raise
                # with several servers, one that fails costs only its own runs (each says why in lab.json)
                self.failed[name] = str(exc)
                self.stop([name])
                print(f"lab: {name} did not start: {exc}", file=sys.stderr, flush=True)
                continue
            self.started[name] = {"url": server.base_url, "startup_s": round(server.startup_s, 1),
                                  "log": str(server.log_path)}  # fmt: skip
            print(f"lab: {name} healthy after {server.startup_s:.0f} s", flush=True)

    def stop(self, names: list[str] | None = None) -> None:
        for name in list(names or self.running):
            server = self.running.pop(name, None)
            if server is not None:
                server.stop()
                print(f"lab: {name} stopped", flush=True)

    def url(self, name: str) -> str:
        return str(self.running[name].base_url)


def _gpu_name() -> str | None:
    try:
        from vlab.telemetry.gpu import show

        devices = show().get("devices") or []
        return str(devices[0]["name"]) if devices else None
    except Exception:  # no NVML here: the report says so from the run's own gpu_metrics.json
        return None


def _run_one(spec: RunSpec, lab_dir: Path, servers: Servers, plan: LabPlan) -> dict[str, Any]:
    """Run one spec against its server; return its manifest entry."""
    from server.facts import facts_for
    from server.profile import load_profile
    from vlab.commands.runner import run_locust
    from vlab.commands.vllm_bench import run_vllm_bench
    from vlab.core.server_facts import write_server_facts

    run_dir = lab_dir / spec.folder
    run_dir.mkdir(parents=True, exist_ok=True)
    profile = load_profile(spec.profile)
    entry: dict[str, Any] = {**asdict(spec), "run_dir": spec.folder, "started_at": time.time()}
    if spec.profile in servers.failed:
        entry.update(code=1, error=f"server {spec.profile} did not start: {servers.failed[spec.profile]}",
                     ended_at=time.time())  # fmt: skip
        return entry
    host = servers.url(spec.profile)
    print(f"lab: {spec.folder} ...", flush=True)
    try:
        if spec.kind == "vllm_bench":
            b = spec.bench
            tokenizer = profile.resolved_model()
            result = run_vllm_bench(
                host, profile.served_model_name, tokenizer, concurrency=b["concurrency"], prompts=b["prompts"],
                input_len=b["input_len"], output_len=b["output_len"], out=run_dir / "vllm_bench.json",
                seed=int(time.time()) % 100_000,
            )  # fmt: skip
            entry.update(command=result.command, result=result.result, code=0)
        else:
            for name, text in spec.files.items():
                (run_dir / name).write_text(text)
            scenario_map = json.loads(json.dumps(spec.scenario).replace("{run_dir}", str(run_dir.resolve())))
            path = run_dir / "scenario.yaml"
            path.write_text(yaml.safe_dump(scenario_map, sort_keys=False))
            write_server_facts(run_dir, facts_for(profile, gpu_name=_gpu_name()))
            scenario = load_scenario(path)
            code = run_locust(scenario, path, run_dir, host=host, processes=plan.processes,
                              server_profile=spec.profile, overwrite=True)  # fmt: skip
            entry.update(code=code)
    except UserError as exc:
        entry.update(code=exc.exit_code, error=str(exc))
        print(f"lab: {spec.folder}: {exc}", file=sys.stderr, flush=True)
    entry["ended_at"] = time.time()
    return entry


def run_lab(plan: LabPlan, base: str, runs: list[RunSpec], lab_dir: Path, *, report: bool = True) -> Path:
    """Run every spec (servers as the plan says), write lab.json, and the reports unless `report` is off."""
    from server.profile import load_profile

    for name in sorted({r.profile for r in runs}):  # every profile is checked before any server starts
        load_profile(name)
    manifest: dict[str, Any] = {"plan": plan.model_dump(mode="json"), "base": base, "started_at": time.time(),
                                "runs": [], "servers": {}}  # fmt: skip
    servers = Servers(lab_dir)
    order = sorted(range(len(runs)), key=lambda i: (0 if plan.co_host else runs[i].profile, i))
    try:
        if plan.co_host:
            servers.start(sorted({r.profile for r in runs}))
        for i in order:
            spec = runs[i]
            if not plan.co_host and spec.profile not in servers.running:
                servers.stop()
                servers.start([spec.profile])
            manifest["runs"].append(_run_one(spec, lab_dir, servers, plan))
            manifest["servers"] = servers.started
            manifest["servers_failed"] = servers.failed
            _write_manifest(lab_dir, manifest)
    finally:
        for name, server in list(servers.running.items()):
            target = lab_dir / "servers" / f"{name}.log"
            if server.log_path != target:
                target.write_bytes(server.log_path.read_bytes())
        servers.stop()
    manifest["ended_at"] = time.time()
    _write_manifest(lab_dir, manifest)
    if report:
        return build_lab_reports(lab_dir)
    return lab_dir / LAB_JSON


def _write_manifest(lab_dir: Path, manifest: dict[str, Any]) -> None:
    (lab_dir / LAB_JSON).write_text(json.dumps(json_safe(manifest), indent=2) + "\n")


def build_lab_reports(lab_dir: Path) -> Path:
    """Every run's report, each experiment's comparison, and the lab's index page (from lab.json)."""
    from analysis.lab import write_lab_index
    from analysis.pipeline import analyze
    from analysis.report import write_report

    manifest = json.loads((lab_dir / LAB_JSON).read_text())
    summaries: dict[str, Any] = {}
    for entry in manifest["runs"]:
        run_dir = lab_dir / entry["run_dir"]
        if entry["kind"] != "suite" or not (run_dir / REQUESTS_CSV).exists():
            continue
        try:
            summaries[entry["run_dir"]] = analyze(run_dir)
            write_report([summaries[entry["run_dir"]]], run_dir / REPORT_HTML)
        except UserError as exc:
            entry["error"] = str(exc)
    by_experiment: dict[str, list[Any]] = {}
    for entry in manifest["runs"]:
        if entry["run_dir"] in summaries and not entry["label"].startswith("identical"):
            by_experiment.setdefault(entry["experiment"], []).append(summaries[entry["run_dir"]])
    for name, group in by_experiment.items():
        if len(group) > 1:
            write_report(group, lab_dir / name / "compare.html")
    return write_lab_index(lab_dir, manifest, summaries, {n: (e.title, e.question) for n, e in EXPERIMENTS.items()})


# ------------------------------------------------------------------------------------------------------- command
def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lab", help="run the whole lab on a server profile, one index page", description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--profile", help="the base server profile (default: the plan's base)")
    parser.add_argument("--plan", help="lab plan: a name in scenarios/lab/ or a file (default: gpu for a cuda "
                        "profile, else cpu)")  # fmt: skip
    parser.add_argument("--only", help="comma-separated experiments (default: all): " + ", ".join(EXPERIMENTS))
    parser.add_argument("-o", "--output", type=Path, help="lab folder (default: reports/<time>-lab-<plan>)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their rough durations; run nothing")
    parser.add_argument("--no-report", action="store_true", help="skip the reports (build them later: --report-only)")
    parser.add_argument("--report-only", type=Path, metavar="LAB_DIR", help="rebuild the reports of a lab folder")
    parser.set_defaults(func=_cmd_lab)


def _cmd_lab(args: argparse.Namespace) -> int:
    if args.report_only is not None:
        if not (args.report_only / LAB_JSON).is_file():
            raise UserError(f"{args.report_only}: no lab.json (is it a lab folder?)", exit_code=2)
        print(f"report: {build_lab_reports(args.report_only)}")
        return 0
    from server.profile import load_profile

    plan_name = args.plan
    if plan_name is None:
        plan_name = "gpu" if args.profile and load_profile(args.profile).device == "cuda" else "cpu"
    plan = load_lab_plan(plan_name)
    base = args.profile or plan.profiles.base
    load_profile(base)
    runs = plan_runs(plan, base, [s.strip() for s in args.only.split(",")] if args.only else None)
    if args.dry_run:
        print("\n".join(describe_plan(plan, base, runs)))
        return 0
    lab_dir = args.output or new_run_dir(f"lab-{plan.name}", REPORTS_DIR)
    lab_dir.mkdir(parents=True, exist_ok=True)
    print(f"lab: {lab_dir}", flush=True)
    out = run_lab(plan, base, runs, lab_dir, report=not args.no_report)
    failed = [e for e in json.loads((lab_dir / LAB_JSON).read_text())["runs"] if e.get("code") not in (0, None)]
    print(f"report: {out}")
    return 1 if failed else 0
