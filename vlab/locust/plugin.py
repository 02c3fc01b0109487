"""The suite inside Locust: the event hooks that tie the scenario, the users, the records and the run folder together.

Importing this module (the locustfiles do, through their user classes) registers:

- the suite's options (`vlab.locust.options`);
- at init: the scenario is read once (`--set`, `-u/-r/-t` applied; a bad file: one line, exit 2), a used `--run-dir`
  is refused, the host defaults to the scenario's, the level shape is installed when the levels drive the run
  (`vlab.locust.shape`), and each user class prepares itself (`prepare`, e.g. the RAG retriever);
- at test start: credentials, the server probed once (`/v1/models`, model, context length), exact prompt lengths
  calibrated, the run folder and `run.json` written, samplers started, and — open loop — the arrival schedule,
  all before any load;
- at test stop: records flushed, levels and `run.json` completed with a status that matches what happened
  (`vlab.core.runfolder.RunStatus`) and the process exit code set from it; a headless run then builds its report.

Exit codes: 0 completed (or stopped from the web UI) with no failed request, 1 (Locust's `--exit-code-on-error`)
completed with some, 1 failed or not started, 2 bad input, 130 interrupted by SIGINT, 143 by SIGTERM
(docs/reliability.md).
"""

from __future__ import annotations

import gc
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

from vlab.client.api import credentials_for, probe_server
from vlab.client.http import DEFAULT_HOST
from vlab.client.tokenize import choose_tokenizer
from vlab.core.datasets import load_scenario_data
from vlab.core.errors import UserError
from vlab.core.metrics import judge_run
from vlab.core.paths import REPO_ROOT
from vlab.core.records import RECORDS_FORMAT
from vlab.core.runfolder import (
    LOCUST_CSV_PREFIX,
    RUN_JSON,
    LostWorker,
    RunMeta,
    ServerInfoMeta,
    WorkersMeta,
    clear_run,
    git_commit,
    holds_run,
    load_generator_info,
    new_run_dir,
    read_run_meta,
    write_levels,
)
from vlab.core.scenario import TRACE_ONE_PROCESS
from vlab.locust import options as vlab_options
from vlab.locust.cluster import LocalCluster, MasterCluster, install_worker, send_level
from vlab.locust.context import RunContext, current, set_context
from vlab.locust.controller import LevelController
from vlab.locust.finisher import Finisher
from vlab.locust.monitor import ClientMonitor
from vlab.locust.schedule import ArrivalSchedule
from vlab.locust.shape import LevelShape, driven_by_levels
from vlab.locust.sink import BATCH_INTERVAL_S, MESSAGE_TYPE, BatchReceiver, CsvSink, MessageSink
from vlab.locust.workload import PromptFactory, WordVocabulary
from vlab.telemetry.gpu import start_gpu_sampler
from vlab.telemetry.server_metrics import start_sampler

log = logging.getLogger("vlab")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
_STATE: dict[str, Any] = {"signal": None, "time_limit_s": None}


# ------------------------------------------------------------------------------------------------------- options
@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kw: Any) -> None:
    vlab_options.add_arguments(parser)


def _error(message: str, code: int) -> None:
    print(f"vlab: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _fail(environment: Environment, message: str, code: int) -> None:
    """Report a user mistake (or an unreachable server) as one line and end the run with a non-zero exit code."""
    print(f"vlab: error: {message}", file=sys.stderr, flush=True)
    environment.process_exit_code = code
    runner = environment.runner
    if runner is not None:
        gevent.spawn_later(0, runner.quit)


# ---------------------------------------------------------------------------------------------------------- init
@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    options: Any = environment.parsed_options
    path = getattr(options, "scenario", "") if options else ""
    if not path:
        _error("--scenario FILE is required (see scenarios/)", EXIT_BAD_INPUT)
    worker = isinstance(environment.runner, WorkerRunner)
    try:
        effective = vlab_options.effective_scenario(path, options)
    except UserError as exc:
        _error(str(exc), exc.exit_code)
    scenario = effective.scenario
    try:  # a dataset where nothing is usable is one line, before any load (parsed once: the factory reuses it)
        loaded = load_scenario_data(scenario.data)
    except UserError as exc:
        _error(str(exc), exc.exit_code)
    _STATE["time_limit_s"] = effective.time_limit_s
    for note in effective.notes:
        log.info("vlab: %s", note)
    if not environment.host:
        environment.host = scenario.api.host or DEFAULT_HOST
    ctx = RunContext(scenario=scenario, scenario_path=Path(path), environment=environment)
    if options.run_dir and not worker:
        ctx.run_dir = Path(options.run_dir)
        if holds_run(ctx.run_dir):
            if not options.overwrite:
                _error(f"--run-dir {ctx.run_dir} already holds a run; choose another folder or pass --overwrite", 2)
            clear_run(ctx.run_dir)
    if scenario.load.replays_trace and (worker or isinstance(environment.runner, MasterRunner)):
        _error(TRACE_ONE_PROCESS, EXIT_BAD_INPUT)
    if loaded is not None:
        ctx.dataset_summary = {**loaded.model_dump(mode="json"), "line": loaded.line()}
        if not worker:
            kind = "trace" if scenario.data.trace is not None else "dataset"
            print(f"vlab: {kind}: {loaded.line()}", file=sys.stderr, flush=True)
    set_context(ctx)
    if not isinstance(environment.runner, MasterRunner):
        try:  # e.g. the RAG user ingests its corpus: before any load clock starts
            for user_class in environment.user_classes or []:
                prepare = getattr(user_class, "prepare", None)
                if prepare is not None:
                    prepare(ctx)
        except UserError as exc:
            _error(str(exc), exc.exit_code)
    headless = bool(getattr(options, "headless", False))
    if driven_by_levels(scenario, headless=headless, worker=worker):
        environment.shape_class = LevelShape(scenario)
        environment.shape_class.runner = environment.runner  # Locust sets it only for shapes found in the locustfile
        if environment.web_ui is not None:
            environment.web_ui.update_template_args()
        ctx.tracker.gate.clear()  # the controller opens it when the first level starts
    if headless and not worker and not getattr(options, "csv_prefix", None):
        ctx.wants_locust_csv = True  # set in _prepare_run_folder, once the folder is known
    if worker:
        ctx.tracker.gate.clear()  # until the master starts a level
        install_worker(ctx)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(MESSAGE_TYPE, _on_records_message)
        ctx.cluster = MasterCluster(ctx)  # registers the workers' progress and drain messages before any arrive
    if not worker:
        # Locust 2.47 installs its SIGTERM handler only after a headless shape run has finished, so a SIGTERM during
        # one killed the process with nothing recorded as interrupted. Until Locust's own handler replaces this one,
        # SIGTERM stops the runner in order (users stopped, in-flight requests cut off, test_stop fired, records
        # flushed, run.json marked interrupted); the headless run then ends as after its last stage.
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(_terminate, environment))
    if environment.web_ui is not None:
        from vlab.locust.webui import install

        install(environment)


def _on_records_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    ctx = current()
    if ctx is not None and ctx.receiver is not None:
        ctx.receiver(environment, msg)


# ----------------------------------------------------------------------------------------------------- test start
@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    ctx = current()
    if ctx is None:
        return
    try:
        ctx.creds = credentials_for(ctx.scenario.api)
        ctx.server = probe_server(ctx.host, ctx.scenario.api.model, creds=ctx.creds)
        if not ctx.is_master:
            _prepare_load_process(ctx)
        if not ctx.is_worker:
            _prepare_run_folder(ctx)
    except UserError as exc:
        ctx.start_error = str(exc)
        _write_not_started(ctx, str(exc))
        _fail(environment, str(exc), exc.exit_code)
        return
    except Exception as exc:  # a bug: shown whole in the log, and the run ends instead of waiting at a closed gate
        log.exception("vlab: internal error while starting the test")
        ctx.start_error = f"internal error while starting the test: {type(exc).__name__}: {exc}"
        _write_not_started(ctx, ctx.start_error)
        _fail(environment, ctx.start_error, EXIT_FAILED)
        return
    if not ctx.is_worker:
        _start_levels(ctx)


def _cache_locust_defaults() -> None:
    """Stop a worker's hub from stalling at every level change. On each `spawn` message a Locust worker (2.47)
    filters the master's options with `k not in argument_parser.default_args_dict()`, which builds Locust's whole
    argument parser once per option: ~70 parser builds, 100 ms on an H200 host's core and 400 ms on a busy CI core,
    during which no stream of that worker is read (seen as a 100 ms hub lag on every worker at every level start
    of the first GPU lab). The defaults do not change during a run, so one build serves every call; each call gets
    its own copy."""
    from locust import argument_parser

    build = argument_parser.default_args_dict
    if getattr(build, "vlab_cached", False):
        return
    defaults = build()

    def cached() -> dict[str, Any]:
        return dict(defaults)

    cached.vlab_cached = True  # type: ignore[attr-defined]
    argument_parser.default_args_dict = cached


def _quiet_gc() -> None:
    """Keep the garbage collector from pausing the hub mid-stream: everything built at start-up is frozen out of
    its scans, and full collections become rare (streams allocate many short-lived small objects, which young
    collections handle). VLAB_GC=default keeps Python's defaults, for comparison (bench/client_bench.py)."""
    if os.environ.get("VLAB_GC") == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1_000)


def _prepare_load_process(ctx: RunContext) -> None:
    """Calibrate prompt lengths and build the workload: once per load-generating process, before its users run."""
    scenario, server = ctx.scenario, ctx.server
    assert server is not None
    vocabulary = None
    if scenario.data.dataset is None and scenario.data.rag is None:
        tokenizer = choose_tokenizer(server, scenario.api.tokenizer, ctx.creds)
        if tokenizer is None:
            vocabulary = WordVocabulary.approximate()
            ctx.prompt_lengths = "approximate (no /tokenize on the server and no local tokenizer: words, not tokens)"
            log.warning("vlab: prompt lengths are %s; pass --set api.tokenizer=PATH for exact ones", ctx.prompt_lengths)
        else:
            vocabulary = WordVocabulary.calibrate(tokenizer, chat=scenario.api.endpoint in ("chat", "responses"))
            ctx.prompt_lengths = f"exact ({tokenizer.source})"
    if ctx.finisher is not None:  # a new test in the same process (web UI): finish the previous one first
        ctx.finisher.close()
    # Made before the factory: users run only once there is a factory, and then always find a finisher.
    ctx.finisher = Finisher(deferred=os.environ.get("VLAB_FINISH") != "inline")  # inline: client benchmark A/B
    factory = PromptFactory(scenario, server.model, vocabulary, node=ctx.node)
    factory.check_context(server.max_model_len)
    if ctx.sink is not None:
        ctx.sink.close()
    if ctx.is_worker:
        ctx.sink = MessageSink(ctx.environment.runner, ctx.node)
    else:
        if ctx.run_dir is None:
            ctx.run_dir = new_run_dir(scenario.name)
        ctx.sink = CsvSink(ctx.run_dir)
    if scenario.load.open_loop:
        ctx.schedule = ArrivalSchedule(scenario.load, ctx.tracker, share=ctx.share, seed=ctx.node, trace=factory.trace)
        ctx.schedule.start()
    ctx.monitor = ClientMonitor(ctx.node, ctx.tracker, ctx.sink.add_monitor)
    ctx.monitor.start()
    ctx.factory = factory
    if ctx.is_worker:
        _cache_locust_defaults()
    _quiet_gc()


def _base_meta(ctx: RunContext) -> RunMeta:
    server = ctx.server
    options = ctx.environment.parsed_options
    user_classes = ctx.environment.user_classes or []
    for warning in sorted({getattr(cls, "client_warning", "") for cls in user_classes} - {""}):
        log.warning("vlab: %s", warning)
    return RunMeta(
        format=RECORDS_FORMAT,
        scenario=ctx.scenario,
        scenario_path=str(ctx.scenario_path),
        command=shlex.join(sys.argv),
        host=ctx.host,
        suite_commit=git_commit(),
        load_generator=load_generator_info(),
        client=",".join(sorted({getattr(cls, "client_label", cls.__name__) for cls in user_classes})) or "suite",
        started_at=time.time(),
        server=ServerInfoMeta(
            model=server.model,
            models=server.models_answer,
            max_model_len=server.max_model_len,
            vllm_version=server.version,
            notes=server.notes,
        )
        if server is not None
        else None,
        prompt_overhead_tokens={
            "chat": ctx.factory.vocab.chat_overhead,
            "completions": ctx.factory.vocab.completions_overhead,
        }
        if ctx.factory is not None and ctx.factory.vocab is not None
        else None,
        prompt_lengths=ctx.prompt_lengths or None,
        server_profile=getattr(options, "server_profile", "") or None,
        dataset=ctx.dataset_summary,
    )


def _prepare_run_folder(ctx: RunContext) -> None:
    if ctx.run_dir is None:
        ctx.run_dir = new_run_dir(ctx.scenario.name)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_master:
        sink = ctx.sink if isinstance(ctx.sink, CsvSink) else CsvSink(ctx.run_dir)
        ctx.sink = sink
        ctx.receiver = BatchReceiver(sink)
    if ctx.wants_locust_csv:
        _start_locust_csv(ctx)
    _base_meta(ctx).write(ctx.run_dir)
    gevent.spawn(_watch_runner, ctx)
    interval = ctx.scenario.api.metrics_interval_s
    if interval > 0:
        # Separate processes: parsing /metrics or reading NVML never runs on this process's gevent hub.
        ctx.samplers.append(start_sampler(ctx.host, ctx.run_dir, interval, ctx.creds.api_key))
        ctx.samplers.append(start_gpu_sampler(ctx.run_dir, interval))
    print(f"vlab: run folder {ctx.run_dir}", file=sys.stderr, flush=True)


def _start_locust_csv(ctx: RunContext) -> None:
    """Headless run without --csv: Locust's own CSV files go into the run folder, as with `vlab sweep`."""
    from locust import stats

    assert ctx.run_dir is not None
    prefix = str(ctx.run_dir / LOCUST_CSV_PREFIX)
    writer = stats.StatsCSVFileWriter(ctx.environment, stats.PERCENTILES_TO_REPORT, prefix, False)
    gevent.spawn(writer.stats_writer)
    ctx.locust_csv = writer


def _start_levels(ctx: RunContext) -> None:
    """The level controller, when the levels drive the run (on the master or the only process)."""
    if ctx.environment.shape_class is None:
        return
    shape = ctx.environment.shape_class
    shape.reset_time()  # start-up (probe, calibration) ran while the shape's clock was going
    cluster = ctx.cluster if ctx.cluster is not None else LocalCluster(ctx)

    def on_level(level: Any) -> None:
        if ctx.run_dir is not None:
            write_levels(ctx.run_dir, ctx.tracker.levels)  # kept current, so a report built mid-run sees the levels
        if level.end_s is None:
            unit = "req/s" if ctx.scenario.load.open_loop else "users"
            log.info("vlab: level %d: %g %s", level.index, level.target, unit)

    ctx.controller = LevelController(
        ctx.scenario.load, ctx.tracker, cluster, on_level=on_level, time_limit_s=_STATE["time_limit_s"]
    )
    ctx.controller.start()


def _watch_runner(ctx: RunContext) -> None:
    """On the master (or the only process): without a shape (web UI), every new target user count started from the
    form is a level; on a master, a worker that stops sending heartbeats is noted as lost."""
    runner: Any = ctx.environment.runner
    follow_users = ctx.environment.shape_class is None
    lost: set[str] = set()
    while True:
        target = getattr(runner, "target_user_count", None)
        if follow_users and target:
            current_level = ctx.tracker.current
            level = ctx.tracker.enter(float(target))
            if level is not current_level:
                if ctx.run_dir is not None:
                    write_levels(ctx.run_dir, ctx.tracker.levels)
                if ctx.is_master:
                    send_level(ctx, level)
        if ctx.is_master:
            for client in runner.clients.missing:
                if client.id not in lost:
                    lost.add(client.id)
                    ctx.workers_lost.append(lost_worker(ctx, client.id))
                    log.warning("vlab: worker %s was lost; its records sent so far are kept", client.id)
        gevent.sleep(0.25)


def lost_worker(ctx: RunContext, worker_id: str) -> LostWorker:
    """What run.json says of a worker that stopped sending heartbeats: which node, how many of its records are on
    disk, and why the rest are not."""
    node = ctx.receiver.nodes.get(worker_id) if ctx.receiver else None
    silent_s = HEARTBEAT_LIVENESS * HEARTBEAT_INTERVAL
    return LostWorker(
        worker=worker_id,
        at=time.time(),
        node=node,
        records_received=ctx.receiver.received.get(node, 0) if ctx.receiver and node else 0,
        reason=f"no heartbeat for {silent_s:g} s (the process died or hung): the records it had not yet sent (at "
        f"most its last {BATCH_INTERVAL_S:g} s) and its streams in flight are not on disk",
    )


# ------------------------------------------------------------------------------------------------------ test stop
@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    ctx = current()
    if ctx is None:
        return
    interrupted = ctx.controller is not None and not ctx.controller.finished
    if ctx.controller is not None:
        ctx.controller.stop()
    if ctx.schedule is not None:
        ctx.schedule.stop()
    if ctx.monitor is not None:
        ctx.monitor.stop()
    if ctx.finisher is not None:  # the users are stopped: record every stream that ended or was cut off
        ctx.finisher.drain()
    if ctx.is_worker and isinstance(ctx.sink, MessageSink):
        ctx.sink.flush(final=True)
    elif ctx.receiver is not None:
        # Workers flush their last batch from their own test_stop, which can come after the master's: wait for it.
        runner: Any = ctx.environment.runner
        live = len(runner.clients.all) - len(runner.clients.missing)
        if not ctx.receiver.wait_for_finals(live):
            log.warning("vlab: %d of %d workers sent no final batch", live - len(ctx.receiver.finished), live)
    if ctx.sink is not None:
        ctx.sink.flush()
    for sampler in ctx.samplers:
        sampler.stop()
    ctx.samplers = []
    if ctx.start_error is not None:  # never started: run.json keeps `not_started` and why, the exit code stays
        return
    if not ctx.is_worker and ctx.run_dir is not None and (ctx.run_dir / RUN_JSON).exists():
        _finish_run(ctx, interrupted=interrupted or _STATE["signal"] is not None)


def _finish_run(ctx: RunContext, *, interrupted: bool) -> None:
    """Close the levels and write run.json's end: the status says what happened, and sets the exit code."""
    assert ctx.run_dir is not None
    ctx.tracker.close(ended_by="stop")
    write_levels(ctx.run_dir, ctx.tracker.levels)
    meta = read_run_meta(ctx.run_dir)
    meta.ended_at = time.time()
    counts = ctx.sink.counts if ctx.sink is not None else None
    if ctx.environment.shape_class is None:
        meta.status = "stopped"
    elif interrupted:
        meta.status, meta.interrupted_at = "interrupted", meta.ended_at
    else:
        meta.status = "completed"
    notes = list(ctx.controller.notes) if ctx.controller is not None else []
    if counts is not None and meta.status != "interrupted":
        verdict = judge_run(counts.ok, counts.failed_by_kind)
        if verdict is not None:
            meta.status, meta.status_reason = "failed", verdict
    if notes:
        meta.status_reason = "; ".join(filter(None, [meta.status_reason, *notes]))
    meta.records = ctx.sink.written if ctx.sink is not None else None
    if ctx.is_master:
        meta.workers = WorkersMeta(lost=ctx.workers_lost, batches_rejected=ctx.receiver.rejected if ctx.receiver else 0)
    meta.write(ctx.run_dir)
    some_failed = counts is not None and sum(counts.failed_by_kind.values()) > 0
    on_error = int(getattr(ctx.environment.parsed_options, "exit_code_on_error", 1))
    ctx.environment.process_exit_code = exit_code(meta.status, _STATE["signal"], on_error if some_failed else 0)
    if meta.status_reason:
        print(f"vlab: run {meta.status}: {meta.status_reason}", file=sys.stderr, flush=True)


def exit_code(status: str, signum: int | None, on_failures: int = 0) -> int:
    """The process exit code of a run that ended with `status` (see the module docstring); `on_failures` is what a
    completed run with some failed requests returns (Locust's `--exit-code-on-error`, default 1)."""
    if status == "interrupted":
        return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    return EXIT_FAILED if status in ("failed", "not_started") else on_failures


def _write_not_started(ctx: RunContext, reason: str) -> None:
    """A run that could not start leaves a run.json that says so, in a folder the user named (none is created)."""
    if ctx.is_worker or ctx.run_dir is None or not ctx.run_dir.is_dir():
        return
    meta = RunMeta(
        format=RECORDS_FORMAT,
        scenario=ctx.scenario,
        scenario_path=str(ctx.scenario_path),
        command=shlex.join(sys.argv),
        host=ctx.host,
        suite_commit=git_commit(),
        load_generator=load_generator_info(),
        started_at=time.time(),
        ended_at=time.time(),
        status="not_started",
        status_reason=reason,
    )
    meta.write(ctx.run_dir)


def _terminate(environment: Environment) -> None:
    _STATE["signal"] = signal.SIGTERM
    print("vlab: SIGTERM: stopping the run; records so far are kept", file=sys.stderr, flush=True)
    runner = environment.runner
    if runner is not None and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw: Any) -> None:
    # Ctrl-C / SIGTERM: Locust fires `quitting` before it stops the runner. Stop it here, so that test_stop records
    # the in-flight requests as cut off and marks run.json interrupted while the sink is still open.
    runner = environment.runner
    ctx = current()
    if runner is not None and not isinstance(runner, WorkerRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        if ctx is not None and ctx.controller is not None and not ctx.controller.finished and _STATE["signal"] is None:
            _STATE["signal"] = signal.SIGINT
        runner.stop()
    if ctx is None:
        return
    if ctx.finisher is not None:
        ctx.finisher.close()
    if ctx.sink is not None:
        ctx.sink.close()
    if ctx.locust_csv is not None:
        ctx.locust_csv.close_files()
    if ctx.is_worker or ctx.run_dir is None:
        return
    if ctx.sink is not None:
        print(f"vlab: {ctx.sink.written} requests recorded in {ctx.run_dir}", file=sys.stderr, flush=True)
    options = environment.parsed_options
    if getattr(options, "headless", False) and not getattr(options, "no_report", False) and ctx.sink is not None:
        _report(ctx.run_dir)


def _report(run_dir: Path) -> None:
    """A headless run's report and per-level table, built by `vlab report` in a child process."""
    cmd = [sys.executable, "-m", "vlab", "report", str(run_dir), "--table"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        subprocess.run(cmd, cwd=REPO_ROOT, env=env, timeout=600, check=False, stdout=sys.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"vlab: the report could not be built ({exc}); run: vlab report {run_dir}", file=sys.stderr)
