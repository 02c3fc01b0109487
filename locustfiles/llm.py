"""Stream completions from a vLLM (or any OpenAI-compatible) server and time every token event.

    locust -f locustfiles/llm.py --scenario scenarios/demo.yaml                 # web UI
    locust -f locustfiles/llm.py --scenario scenarios/demo.yaml --headless      # the scenario's levels, then exit

Records land in the run folder (`--run-dir`, default reports/<time>-<scenario>); a headless run ends with its HTML
report and a per-level table. The suite's options and what Locust's own mean with a scenario:
vlab/locust/options.py (`vlab locust -f locustfiles/llm.py --help` lists them with Locust's).
"""

from vlab.locust import plugin  # noqa: F401  (registers the suite's Locust hooks)
from vlab.locust.user import LLMUser

__all__ = ["LLMUser"]
