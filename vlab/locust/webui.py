"""The Locust web UI as an LLM load console: an "LLM" tab in Locust's own UI and a live page at `/llm`.

`install(environment)` is called by the plugin at init when the web UI is on (`vlab.locust.plugin._on_init`). It uses
Locust's extension points only, no fork of its UI:

- `web_ui.template_args["extended_tabs" / "extended_tables"]` add an **LLM** tab to the standard React UI; the rows
  come in `extended_stats`, which an `after_request` hook appends to Locust's `/stats/requests` answer (the UI
  polls it every 2 s). The tab holds the suite's exact percentiles per endpoint (TTFT, ITL mean, TPOT, E2E in ms).
- `web_ui.template_args["extended_csv_files"]` adds links on Locust's "Download Data" tab: the LLM console page
  and the HTML report of the run so far.
- Flask routes on `web_ui.app` (each behind `web_ui.auth_required_if_enabled`, under `--web-base-path`):

  ============================  ======================================================================================
  `GET  /llm`                   the console page: live charts, exact-percentile tables, level, scenario, report link
  `GET  /llm/data`              JSON: live series, tables, totals, level, runner state (what the page polls)
  `GET  /llm/scenario`          JSON: the scenario in force (YAML of the validated model) and the files in scenarios/
  `POST /llm/scenario`          `path=<file in scenarios/>`: replace the scenario before the first start
  `GET  /llm/report`            build the HTML report of the run so far (in a child process), redirect to it
  `GET  /llm/report/index.html` the report built above
  `/llm/chat…`                  the chat page and its same-origin relay to the host (`vlab.locust.chat`)
  ============================  ======================================================================================

Numbers come from the run folder, never from the users' hot path: `RecordTail` keeps a byte offset into
`RUN_DIR/requests.csv` and parses only the complete lines added since the last look (the master writes that file in
distributed runs too, so the page covers every worker). `RUN_DIR/server_metrics.csv` (`vlab.telemetry.server_metrics`)
is tailed the same way when it exists. Tailing happens only when the page or the LLM tab asks for data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import yaml
from flask import Blueprint, Flask, Response, jsonify, make_response, redirect, request, send_file
from locust.env import Environment
from locust.runners import STATE_INIT

from vlab.client.api import Credentials, credentials_for
from vlab.core.errors import UserError
from vlab.core.paths import REPO_ROOT, SCENARIOS_DIR
from vlab.core.runfolder import REPORT_HTML, REQUESTS_CSV, SERVER_METRICS_JSON
from vlab.core.scenario import load_scenario
from vlab.locust import chat
from vlab.locust.context import RunContext, context
from vlab.locust.levels import LevelTracker
from vlab.locust.live import BUCKET_S, SETTLE_S, STATS, RecordTail
from vlab.locust.shape import LevelShape, driven_by_levels

log = logging.getLogger("vlab")

REPORT_TIMEOUT_S = 180.0
STATIC = Path(__file__).parent / "webui_static"
TAB_KEY = "llm"


# ------------------------------------------------------------------------------------------------------- the console
class Console:
    """State of the LLM console in the process that serves the web UI (the master, or the only process)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.tail: RecordTail | None = None
        self.report_error: str | None = None
        self._sampler: gevent.Greenlet | None = None

    @staticmethod
    def ctx() -> RunContext:
        return context()

    @property
    def state(self) -> str:
        runner = self.environment.runner
        return str(runner.state) if runner is not None else "none"

    @property
    def running(self) -> bool:
        return self.state in ("spawning", "running", "stopping", "cleanup")

    def _tail(self) -> RecordTail | None:
        """The tail of the current run folder (None before the first start), not polled."""
        run_dir = self.ctx().run_dir
        if run_dir is None:
            return None
        if self.tail is None or self.tail.run_dir != run_dir:
            self.tail = RecordTail(run_dir)
        return self.tail

    def current_tail(self) -> RecordTail | None:
        """The tail of the current run folder, with what was appended since the last look parsed."""
        tail = self._tail()
        if tail is not None:
            tail.poll()
        return tail

    def start_sampling(self) -> None:
        """Sample Locust's user count once per BUCKET_S (cheap: one attribute read), for the in-flight chart."""

        def loop() -> None:
            while True:
                gevent.sleep(BUCKET_S / 2)
                runner = self.environment.runner
                tail = self._tail() if runner is not None and self.running else None
                if tail is not None and runner is not None:
                    tail.add_users(time.time(), int(runner.user_count))

        self._sampler = gevent.spawn(loop)

    # -------------------------------------------------------------------------------------------------- data
    def level(self) -> dict[str, Any] | None:
        ctx = self.ctx()
        level = ctx.tracker.current
        if level is None:
            return None
        unit = "req/s" if ctx.scenario.load.open_loop else "users"
        return {
            "index": level.index,
            "target": level.target,
            "unit": unit,
            "since_s": round(time.time() - level.start_s, 1),
        }

    def data(self) -> dict[str, Any]:
        """Everything the console page shows, as JSON-safe values (None for missing numbers)."""
        ctx = self.ctx()
        runner = self.environment.runner
        tail = self.current_tail()
        out: dict[str, Any] = {
            "state": self.state,
            "users": int(runner.user_count) if runner is not None else 0,
            "workers": getattr(runner, "worker_count", None) if ctx.is_master else None,
            "level": self.level(),
            "scenario": {"name": ctx.scenario.name, "path": str(ctx.scenario_path)},
            "run_dir": str(ctx.run_dir) if ctx.run_dir else None,
            "bucket_s": BUCKET_S,
            "totals": {"requests": 0, "ok": 0, "failed": 0, "nodes": {}},
            "series": None,
            "tables": None,
            "server": self.server_note(),
            "report_error": self.report_error,
        }
        if tail is None:
            return out
        n_ok = int(sum(tail.cols["ok"]))
        out["totals"] = {"requests": tail.n, "ok": n_ok, "failed": tail.n - n_ok, "nodes": dict(tail.nodes)}
        until = time.time() - SETTLE_S if self.running else math.inf
        out["series"] = tail.series(until)
        level = ctx.tracker.current
        out["tables"] = tail.summaries(level.index if level is not None else None)
        return out

    def server_note(self) -> dict[str, Any]:
        """Whether server metrics are sampled: server_metrics.json's `available` and `reason`, when present."""
        ctx = self.ctx()
        if ctx.scenario.api.metrics_interval_s <= 0:
            return {"available": False, "reason": "api.metrics_interval_s is 0 in the scenario"}
        if ctx.run_dir is None:
            return {"available": None, "reason": "not started"}
        try:
            note = json.loads((ctx.run_dir / SERVER_METRICS_JSON).read_text())
        except (OSError, ValueError):
            return {"available": None, "reason": "no server_metrics.json yet"}
        return {"available": bool(note.get("available")), "reason": note.get("reason")}

    def tab_rows(self) -> list[dict[str, Any]]:
        """Rows of the LLM tab in Locust's UI: the whole-run table, numbers rounded to 0.01 ms."""
        try:
            tail = self.current_tail()
        except RuntimeError:
            return []
        if tail is None:
            return []
        rows = []
        for row in tail.summaries()["run"]:
            cells = {s: ("—" if row[s] is None else row[s] if s == "n" else round(row[s], 2)) for s in STATS}
            rows.append({"endpoint": row["endpoint"], "metric": row["label"], **cells})
        return rows

    def chat_target(self) -> chat.Target:
        """The chat page's host: the probed server (after a start) or Locust's --host, with the run's credentials."""
        ctx = self.ctx()
        if ctx.server is not None:
            return chat.Target(ctx.server.base_url, ctx.creds)
        try:
            creds = credentials_for(ctx.scenario.api)
        except UserError:
            creds = Credentials()
        return chat.Target(self.environment.host or ctx.scenario.api.host, creds)

    # ---------------------------------------------------------------------------------------------- scenario
    def scenario_view(self) -> dict[str, Any]:
        ctx = self.ctx()
        dump = yaml.safe_dump(ctx.scenario.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        can, reason = self.can_change_scenario()
        files = sorted(p.name for p in SCENARIOS_DIR.glob("*.yaml"))
        return {"path": str(ctx.scenario_path), "name": ctx.scenario.name, "yaml": dump, "files": files,
                "can_change": can, "reason": reason}  # fmt: skip

    def can_change_scenario(self) -> tuple[bool, str | None]:
        ctx = self.ctx()
        if ctx.is_master:
            return False, "distributed run: the workers loaded the scenario at start; restart with --scenario"
        if self.state != STATE_INIT or ctx.tracker.levels:
            return False, "the scenario can only be changed before the first start; restart locust to change it"
        return True, None

    def change_scenario(self, name: str) -> tuple[bool, str]:
        """Replace the scenario by `scenarios/<name>` (validated); (ok, message or one-line error)."""
        can, reason = self.can_change_scenario()
        if not can:
            return False, str(reason)
        files = {p.name: p for p in SCENARIOS_DIR.glob("*.yaml")}
        if name not in files:
            return False, f"{name!r} is not a scenario file in {SCENARIOS_DIR}"
        try:
            scenario = load_scenario(files[name])
        except UserError as exc:
            return False, str(exc)
        ctx = self.ctx()
        ctx.scenario = scenario
        ctx.scenario_path = files[name]
        ctx.tracker = LevelTracker(open_loop=scenario.load.open_loop)
        env = self.environment
        if driven_by_levels(scenario, headless=False, worker=False):  # as at startup: the levels drive the run
            shape = LevelShape(scenario)
            shape.runner = env.runner
            env.shape_class = shape
            ctx.tracker.gate.clear()
        else:
            env.shape_class = None
        if env.web_ui is not None:
            env.web_ui.update_template_args()
        return True, f"scenario {scenario.name} ({files[name].name}) is in force"

    # ------------------------------------------------------------------------------------------------ report
    def build_report(self) -> Path:
        """Build RUN_DIR/index.html from the records so far, in a child process (the report's pandas and
        matplotlib work would otherwise stall this process's gevent hub, where users stamp token times)."""
        run_dir = self.ctx().run_dir
        if run_dir is None or not (run_dir / REQUESTS_CSV).exists():
            raise UserError("no records yet: start a test first")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("MPLBACKEND", "Agg")
        out = run_dir / REPORT_HTML
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlab", "report", str(run_dir), "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=REPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise UserError(f"the report took longer than {REPORT_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise UserError(lines[-1] if lines else f"report failed (exit {proc.returncode})")
        return out


# ------------------------------------------------------------------------------------------------------ installing
def _tab_args() -> dict[str, Any]:
    structure = [{"key": "endpoint", "title": "Endpoint"}, {"key": "metric", "title": "Metric (exact, ok requests)"}]
    structure += [{"key": s, "title": "p99.9" if s == "p999" else s} for s in STATS]
    return {
        "extended_tabs": [{"title": "LLM", "key": TAB_KEY}],
        "extended_tables": [{"key": TAB_KEY, "structure": structure}],
        "extended_csv_files": [
            {"href": "./llm", "title": "LLM console: live TTFT / ITL / tokens/s charts, level, scenario"},
            {"href": "./llm/chat", "title": "Chat with the model: streamed answer, its TTFT / ITL / tok/s live"},
            {"href": "./llm/report", "title": "HTML report of the run so far (vlab report)"},
        ],
    }


def _merge_list(args: dict[str, Any], key: str, items: list[dict[str, Any]]) -> None:
    """Append to a template-args list, keeping what another extension put there."""
    args[key] = [*(args.get(key) or []), *items]


def install(environment: Environment) -> Console:
    """Add the LLM tab, the console page and its routes to `environment.web_ui` (see the module docstring)."""
    web_ui = environment.web_ui
    if web_ui is None or web_ui.app is None:
        raise RuntimeError("vlab.locust.webui.install needs the web UI")
    console = Console(environment)
    for key, items in _tab_args().items():
        _merge_list(web_ui.template_args, key, items)
    options = environment.parsed_options
    base = (getattr(options, "web_base_path", None) or "").rstrip("/") or None
    bp = Blueprint("vlab_llm", __name__, url_prefix=base)
    auth: Callable[[Callable[..., Any]], Callable[..., Any]] = web_ui.auth_required_if_enabled

    @bp.route("/llm")
    @auth
    def llm_page() -> Response:
        return send_file(STATIC / "llm.html", mimetype="text/html", max_age=0)

    @bp.route("/llm/data")
    @auth
    def llm_data() -> Response:
        return _json(console.data())

    @bp.route("/llm/scenario", methods=["GET", "POST"])
    @auth
    def llm_scenario() -> Response:
        if request.method == "POST":
            name = request.form.get("path") or (request.get_json(silent=True) or {}).get("path") or ""
            ok, message = console.change_scenario(Path(str(name)).name)
            return _json({"ok": ok, "message": message, **console.scenario_view()}, 200 if ok else 409)
        return _json(console.scenario_view())

    @bp.route("/llm/report")
    @auth
    def llm_report() -> Response:
        try:
            console.build_report()
        except UserError as exc:
            console.report_error = str(exc)
            return make_response(f"vlab: report: {exc}\n", 409, {"Content-Type": "text/plain; charset=utf-8"})
        console.report_error = None
        return redirect(f"{request.script_root}{base or ''}/llm/report/{REPORT_HTML}")  # type: ignore[return-value]

    @bp.route(f"/llm/report/{REPORT_HTML}")
    @auth
    def llm_report_file() -> Response:
        run_dir = console.ctx().run_dir
        if run_dir is None or not (run_dir / REPORT_HTML).is_file():
            return make_response("no report yet: open /llm/report to build it\n", 404)
        return send_file(run_dir / REPORT_HTML, mimetype="text/html", max_age=0)

    chat.install(bp, auth, console.chat_target)
    app: Flask = web_ui.app
    app.register_blueprint(bp)

    @app.after_request
    def add_llm_tab_rows(response: Response) -> Response:
        """Locust's UI polls /stats/requests; its `extended_stats` feed the LLM tab (Locust's documented hook)."""
        if not request.path.endswith("/stats/requests") or response.status_code != 200 or not response.is_json:
            return response
        try:
            body = response.get_json()
            extra = [e for e in body.get("extended_stats") or [] if e.get("key") != TAB_KEY]
            body["extended_stats"] = [*extra, {"key": TAB_KEY, "data": console.tab_rows()}]
            response.set_data(json.dumps(body))
        except Exception:  # the standard UI must keep working whatever happens here
            log.exception("vlab: could not add the LLM tab rows")
        return response

    console.start_sampling()
    return console


def _json(data: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response
