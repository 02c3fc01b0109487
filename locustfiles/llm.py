"""Stream completions from a vLLM (or any OpenAI-compatible) server and time every token event.

    locust -f locustfiles/llm.py --scenario scenarios/demo.yaml                 # web UI
    locust -f locustfiles/llm.py --scenario scenarios/demo.yaml --headless      # the scenario's stages, then exit

Records land in the run folder (`--run-dir`, default reports/<time>-<scenario>); `vlab report RUN_DIR` makes the
HTML report.
"""

from vlab.locust.plugin import shape_from_argv
from vlab.locust.user import LLMUser

__all__ = ["LLMUser"]

ScenarioShape = shape_from_argv()  # None when the web UI's form drives the user count
