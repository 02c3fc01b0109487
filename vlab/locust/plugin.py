"""The suite inside Locust: command-line options, the run context, and the event hooks that tie them together.

Importing this module (the locustfiles do) registers:

- `--scenario FILE` (or env LOCUST_SCENARIO) and `--run-dir DIR` options;
- at init: the scenario is loaded (a bad file: one line, exit 2), the host defaults to the scenario's;
- at test start: the server is probed once (`/v1/models`, model served, context length), the tokenizer calibrated,
  the run folder and `run.json` written, and, for open loop, the arrival schedule started — all before any load;
- at test stop: records flushed, levels and `run.json` completed (status `completed`, `stopped` or `interrupted`).

Data flows one way: scenario → `RunContext` (prompt factory, level tracker, schedule) → users → `CsvSink`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from locust import LoadTestShape, events
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from vlab.client.api import ServerInfo, Tokenizer, probe_server
from vlab.core.errors import UserError
from vlab.core.runfolder import RUN_JSON, base_metadata, new_run_dir, read_run_json, write_json_atomic, write_levels
from vlab.core.scenario import LoadConfig, Scenario, load_scenario
from vlab.locust.finisher import Finisher
from vlab.locust.load import ArrivalSchedule, LevelTracker, stage_at
from vlab.locust.monitor import ClientMonitor
from vlab.locust.sink import MESSAGE_TYPE, BatchReceiver, CsvSink, MessageSink
from vlab.locust.workload import PromptFactory, WordVocabulary

log = logging.getLogger("vlab")
DEFAULT_HOST = "http://127.0.0.1:8000"


def api_key_for(scenario: Scenario) -> str | None:
    """The API key from the environment variable or file the scenario names (never from the YAML itself)."""
    api = scenario.api
    if api.api_key_env:
        key = os.environ.get(api.api_key_env)
        if not key:
            raise UserError(f"api.api_key_env: environment variable {api.api_key_env} is not set")
        return key.strip()
    if api.api_key_file:
        try:
            return api.api_key_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise UserError(f"api.api_key_file: cannot read a key from {api.api_key_file}") from None
    return None


@dataclass
class RunContext:
    """Everything a process of the run shares: the scenario and what was derived from it at start."""

    scenario: Scenario
    scenario_path: Path
    environment: Environment
    node: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    tracker: LevelTracker = field(init=False)
    run_dir: Path | None = None
    server: ServerInfo | None = None
    factory: PromptFactory | None = None
    sink: CsvSink | MessageSink | None = None
    finisher: Finisher | None = None
    """Turns ended streams into records off the read path (load-generating processes only)."""
    receiver: BatchReceiver | None = None
    """On the master: takes the workers' record batches."""
    workers_lost: list[dict] = field(default_factory=list)
    schedule: ArrivalSchedule | None = None
    api_key: str | None = None
    shape_finished: bool = False
    share: float = 1.0
    """This worker's share of an open-loop rate (1 / number of workers)."""
    monitor: ClientMonitor | None = None
    sampler: object | None = None
    """The server-metrics sampler process (vlab.telemetry.server_metrics), on the master or the only process."""
    _seq: itertools.count = field(default_factory=itertools.count)
    _users: itertools.count = field(default_factory=itertools.count)
    _poller: gevent.Greenlet | None = None

    def __post_init__(self) -> None:
        self.tracker = LevelTracker(open_loop=self.scenario.load.open_loop)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    def next_request_id(self) -> str:
        return f"{self.node}-{next(self._seq)}"

    def next_user_index(self) -> int:
        return next(self._users)


CONTEXT: RunContext | None = None


def context() -> RunContext:
    if CONTEXT is None:
        raise RuntimeError("the vlab Locust plugin is not initialised (no --scenario?)")
    return CONTEXT


# ------------------------------------------------------------------------------------------------ import-time shape
def make_shape_class(load: LoadConfig, on_stage: Callable[[int, float, float], None]) -> type[LoadTestShape]:
    """A LoadTestShape that walks the scenario's stages; `on_stage(index, target, start_s)` runs when a stage
    begins, with the stage's nominal start (Unix s) on the shape's clock.

    Locust ticks a shape once a second, so a stage change is seen up to 1 s late; levels are stamped at the nominal
    boundaries all the same (the open-loop schedule then issues at once whatever was already due), so a level's
    window is exactly its stage's duration."""

    class ScenarioShape(LoadTestShape):
        """Runs the scenario's stages in order, then stops the test."""

        def __init__(self) -> None:
            super().__init__()
            self._stage: int | None = None

        def _wall(self, run_time_s: float) -> float:
            """The Unix time at which the shape's clock read `run_time_s`."""
            return time.time() - (self.get_run_time() - run_time_s)

        def tick(self):
            index = stage_at(load, self.get_run_time())
            if index is None:
                if CONTEXT is not None:
                    CONTEXT.shape_finished = True
                    CONTEXT.tracker.close(at=self._wall(load.duration_s))
                _stop_workers_first(self.runner)
                return None
            stage = load.stages[index]
            if index != self._stage:
                self._stage = index
                on_stage(index, stage.target, self._wall(sum(st.duration for st in load.stages[:index])))
            if load.open_loop:  # slot users: all of them from the start; the schedule sets the pace
                return load.arrival.max_in_flight, max(load.spawn_rate, float(load.arrival.max_in_flight))
            return stage.users, load.spawn_rate

    return ScenarioShape


def _argv_option(name: str) -> str | None:
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def shape_from_argv():
    """The LoadTestShape for this invocation, or None when the web UI's form drives the load.

    Locust discovers shapes by scanning the locustfile at import, before it parses options, so the scenario is
    read from the command line (or LOCUST_SCENARIO) here. A staged or open-loop scenario, or any headless run,
    gets the shape; a single-stage closed-loop scenario in the web UI leaves the user count to the form.
    """
    path = _argv_option("--scenario") or os.environ.get("LOCUST_SCENARIO")
    if not path:
        return None
    try:
        scenario = load_scenario(path)
    except UserError:
        return None  # reported properly at init
    headless = "--headless" in sys.argv or os.environ.get("LOCUST_HEADLESS", "").lower() in ("1", "true")
    worker = "--worker" in sys.argv
    if worker or not (headless or len(scenario.load.stages) > 1 or scenario.load.open_loop):
        return None
    return make_shape_class(scenario.load, on_stage=_on_stage)


def _on_stage(index: int, target: float, start_s: float) -> None:
    ctx = CONTEXT
    if ctx is None:
        return
    _enter_level(ctx, target, index, at=start_s)


LEVEL_MESSAGE = "vlab_level"


def _enter_level(ctx: RunContext, target: float, index: int | None = None, at: float | None = None) -> None:
    """Start a level here and, on a master, on every worker (same index and start time everywhere; an open-loop
    worker takes 1/workers of the rate)."""
    current = ctx.tracker.current
    level = ctx.tracker.enter(target, index, at=at)
    if level is current:
        return
    log.info("vlab: level %d: %s", level.index, _level_label(ctx.scenario, target))
    if ctx.run_dir is not None and (ctx.run_dir / RUN_JSON).exists():
        write_levels(ctx.run_dir, ctx.tracker.levels)  # kept current, so a report built mid-run sees the levels
    if ctx.is_master:
        workers = max(ctx.environment.runner.worker_count, 1)
        data = {"index": level.index, "target": target, "start_s": level.start_s, "share": 1.0 / workers}
        ctx.environment.runner.send_message(LEVEL_MESSAGE, data)


def _on_records_message(environment: Environment, msg, **_kw) -> None:
    ctx = context()
    if ctx.receiver is not None:
        ctx.receiver(environment, msg)


def _on_level_message(environment: Environment, msg, **_kw) -> None:
    ctx = context()
    ctx.tracker.enter(float(msg.data["target"]), int(msg.data["index"]), at=float(msg.data["start_s"]))
    ctx.share = float(msg.data.get("share", 1.0))
    if ctx.schedule is not None:
        ctx.schedule.share = ctx.share


def _level_label(scenario: Scenario, target: float) -> str:
    return f"{target:g} req/s" if scenario.load.open_loop else f"{target:g} users"


# ------------------------------------------------------------------------------------------------------- options
@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("vllm-inference-lab")
    group.add_argument("--scenario", type=str, env_var="LOCUST_SCENARIO", default="", help="Scenario YAML file.")
    group.add_argument(
        "--run-dir", type=str, env_var="LOCUST_RUN_DIR", default="", help="Run folder (default: reports/<time>-<name>)."
    )


def _fail(environment: Environment, message: str, code: int = 2) -> None:
    """Report a user mistake as one line and end the run with a non-zero exit code."""
    print(f"vlab: error: {message}", file=sys.stderr, flush=True)
    environment.process_exit_code = code
    runner = environment.runner
    if runner is not None:
        gevent.spawn_later(0, runner.quit)


@events.init.add_listener
def _on_init(environment: Environment, **_kw) -> None:
    global CONTEXT
    options = environment.parsed_options
    path = getattr(options, "scenario", "") if options else ""
    if not path:
        print("vlab: error: --scenario FILE is required (see scenarios/)", file=sys.stderr)
        sys.exit(2)
    try:
        scenario = load_scenario(path)
    except UserError as exc:
        print(f"vlab: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if not environment.host:
        environment.host = scenario.api.host or DEFAULT_HOST
    if scenario.data.rag is not None and not isinstance(environment.runner, MasterRunner):
        # Ingesting the corpus and loading the embedding model take seconds: do it before any load clock starts.
        from rag.load_user import open_retriever

        try:
            open_retriever(scenario.data.rag)
        except UserError as exc:
            print(f"vlab: error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
    CONTEXT = RunContext(scenario=scenario, scenario_path=Path(path), environment=environment)
    if options.run_dir:
        CONTEXT.run_dir = Path(options.run_dir)
    if not isinstance(environment.runner, WorkerRunner):
        # Locust 2.47 installs its SIGTERM handler only after a headless shape run has finished, so a SIGTERM during
        # one killed the process with nothing recorded as interrupted. Until Locust's own handler replaces this one,
        # SIGTERM stops the runner in order (users stopped, in-flight requests cut off, test_stop fired, records
        # flushed, run.json marked interrupted); the headless run then ends as after its last stage.
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(_terminate, environment))
    if environment.web_ui is not None:
        from vlab.locust.webui import install

        install(environment)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(MESSAGE_TYPE, _on_records_message)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(LEVEL_MESSAGE, _on_level_message)


# ----------------------------------------------------------------------------------------------------- test start
@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw) -> None:
    ctx = context()
    try:
        ctx.api_key = api_key_for(ctx.scenario)
        if ctx.is_master:
            host = ctx.environment.host or DEFAULT_HOST
            ctx.server = probe_server(host, ctx.scenario.api.model, api_key=ctx.api_key)
        else:
            _prepare_load_process(ctx)
        if not ctx.is_worker:
            _prepare_run_folder(ctx)
    except UserError as exc:
        _fail(environment, str(exc), exc.exit_code)
        return
    shape = environment.shape_class
    if shape is not None and not ctx.is_worker:
        # Start-up (probe, tokenizer calibration, a RAG retriever) ran while the shape's clock was already going:
        # restart it, so the first stage gets its full duration.
        shape.reset_time()
        if ctx.tracker.current is not None:
            ctx.tracker.current.start_s = time.time()
    if not ctx.is_worker and ctx.run_dir is not None:
        write_levels(ctx.run_dir, ctx.tracker.levels)


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
    """Probe the server and build the workload: done once per load-generating process, before its users run."""
    scenario = ctx.scenario
    host = ctx.environment.host or DEFAULT_HOST
    ctx.server = probe_server(host, scenario.api.model, api_key=ctx.api_key)
    vocabulary = None
    if scenario.data.dataset is None and scenario.data.rag is None:
        vocabulary = WordVocabulary.calibrate(Tokenizer(host, ctx.server.model, ctx.api_key))
    if ctx.finisher is not None:  # a new test in the same process (web UI): finish the previous one first
        ctx.finisher.close()
    # Made before the factory: users run only once there is a factory, and then always find a finisher.
    ctx.finisher = Finisher(deferred=os.environ.get("VLAB_FINISH") != "inline")  # inline: client benchmark A/B
    ctx.factory = PromptFactory(scenario, ctx.server.model, vocabulary, node=ctx.node)
    ctx.factory.check_context(ctx.server.max_model_len)
    if ctx.sink is not None:
        ctx.sink.close()
    if ctx.is_worker:
        ctx.sink = MessageSink(ctx.environment.runner, ctx.node)
    else:
        if ctx.run_dir is None:
            ctx.run_dir = new_run_dir(scenario.name)
        ctx.sink = CsvSink(ctx.run_dir)
    if scenario.load.open_loop:
        ctx.schedule = ArrivalSchedule(scenario.load, ctx.tracker, share=ctx.share, seed=ctx.node)
        ctx.schedule.start()
    ctx.monitor = ClientMonitor(ctx.node, ctx.tracker, ctx.sink.add_monitor)
    ctx.monitor.start()
    _quiet_gc()


def _prepare_run_folder(ctx: RunContext) -> None:
    if ctx.run_dir is None:
        ctx.run_dir = new_run_dir(ctx.scenario.name)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_master:
        if ctx.sink is None:
            ctx.sink = CsvSink(ctx.run_dir)
        ctx.receiver = BatchReceiver(ctx.sink)
    meta = base_metadata(ctx.scenario.model_dump(mode="json"), ctx.environment.host or DEFAULT_HOST)
    user_classes = ctx.environment.user_classes or []
    meta["client"] = ",".join(sorted({getattr(cls, "client_label", cls.__name__) for cls in user_classes}))
    for warning in sorted({getattr(cls, "client_warning", "") for cls in user_classes} - {""}):
        log.warning("vlab: %s", warning)
    meta["scenario_path"] = str(ctx.scenario_path)
    meta["command"] = shlex.join(sys.argv)
    if ctx.server is not None:
        meta["server"] = {
            "model": ctx.server.model,
            "models": ctx.server.models_answer,
            "max_model_len": ctx.server.max_model_len,
            "vllm_version": ctx.server.version,
        }
    if ctx.factory is not None and ctx.factory.vocab is not None:
        meta["prompt_overhead_tokens"] = {
            "chat": ctx.factory.vocab.chat_overhead,
            "completions": ctx.factory.vocab.completions_overhead,
        }
    profile = os.environ.get("VLAB_SERVER_PROFILE")
    if profile:
        meta["server_profile"] = profile
    write_json_atomic(ctx.run_dir / RUN_JSON, meta)
    ctx._poller = gevent.spawn(_watch_runner, ctx)
    if ctx.scenario.api.metrics_interval_s > 0:
        from vlab.telemetry.server_metrics import start_sampler

        # A separate process: parsing /metrics never runs on this process's gevent hub, beside the users' stamps.
        ctx.sampler = start_sampler(
            ctx.environment.host or DEFAULT_HOST, ctx.run_dir, ctx.scenario.api.metrics_interval_s, ctx.api_key
        )
    print(f"vlab: run folder {ctx.run_dir}", file=sys.stderr, flush=True)


def _watch_runner(ctx: RunContext) -> None:
    """On the master (or the only process): without a shape (web UI), every new target user count started from the
    form is a new level; on a master, a worker that stops sending heartbeats is noted as lost."""
    runner = ctx.environment.runner
    follow_users = ctx.environment.shape_class is None
    lost: set[str] = set()
    while True:
        target = getattr(runner, "target_user_count", None)
        if follow_users and target:
            _enter_level(ctx, float(target))
        if ctx.is_master:
            for client in runner.clients.missing:
                if client.id not in lost:
                    lost.add(client.id)
                    ctx.workers_lost.append({"worker": client.id, "at": time.time()})
                    log.warning("vlab: worker %s was lost; its records sent so far are kept", client.id)
        gevent.sleep(0.25)


# ------------------------------------------------------------------------------------------------------ test stop
@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw) -> None:
    ctx = CONTEXT
    if ctx is None:
        return
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
        runner = ctx.environment.runner
        live = len(runner.clients.all) - len(runner.clients.missing)
        if not ctx.receiver.wait_for_finals(live):
            log.warning("vlab: %d of %d workers sent no final batch", live - len(ctx.receiver.finished), live)
    if ctx.sink is not None:
        ctx.sink.flush()
    if ctx._poller is not None:
        ctx._poller.kill(block=False)
    if ctx.sampler is not None:
        ctx.sampler.stop()
        ctx.sampler = None
    if not ctx.is_worker and ctx.run_dir is not None and (ctx.run_dir / RUN_JSON).exists():
        ctx.tracker.close()
        write_levels(ctx.run_dir, ctx.tracker.levels)
        meta = read_run_json(ctx.run_dir)
        meta["ended_at"] = time.time()
        if environment.shape_class is None:
            meta["status"] = "stopped"
        else:
            finished = ctx.shape_finished or (time.time() - meta["started_at"]) >= ctx.scenario.load.duration_s - 1
            meta["status"] = "completed" if finished else "interrupted"
            if not finished:
                meta["interrupted_at"] = meta["ended_at"]
        meta["records"] = ctx.sink.written if ctx.sink is not None else None
        if ctx.is_master:
            meta["workers"] = {
                "lost": ctx.workers_lost,
                "batches_rejected": ctx.receiver.rejected if ctx.receiver else 0,
            }
        write_json_atomic(ctx.run_dir / RUN_JSON, meta)


def _terminate(environment: Environment) -> None:
    print("vlab: SIGTERM: stopping the run; records so far are kept", file=sys.stderr, flush=True)
    runner = environment.runner
    if runner is not None and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()


def _stop_workers_first(runner) -> None:
    """On a master, stop the test with a stop message to the workers, so that they flush their last records
    before the master's test_stop. (Locust's headless quit path fires test_stop first and tells workers later.)"""
    if isinstance(runner, MasterRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kw) -> None:
    # Ctrl-C / SIGTERM: Locust fires `quitting` before it stops the runner. Stop it here, so that test_stop records
    # the in-flight requests as cut off and marks run.json interrupted while the sink is still open.
    runner = environment.runner
    if runner is not None and not isinstance(runner, WorkerRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()
    ctx = CONTEXT
    if ctx is not None and ctx.finisher is not None:
        ctx.finisher.close()
    if ctx is not None and ctx.sink is not None:
        ctx.sink.close()
        if not ctx.is_worker and ctx.run_dir is not None:
            print(f"vlab: {ctx.sink.written} requests recorded in {ctx.run_dir}", file=sys.stderr, flush=True)
