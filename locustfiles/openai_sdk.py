"""The scenario's workload through the official openai SDK — a comparison path, NOT a measurement path.

    locust -f locustfiles/openai_sdk.py --scenario scenarios/demo.yaml --headless

Same scenarios, records and reports as `locustfiles/llm.py`, but every token is stamped after the SDK has decoded
its chunk, and one process saturates far earlier (see `vlab/locust/sdk_user.py` and docs/performance.md). Runs are
marked `"client": "openai-sdk"` in run.json, and the terminal and the report say so.
"""

from vlab.locust import plugin  # noqa: F401  (registers the suite's Locust hooks)
from vlab.locust.sdk_user import OpenAISDKUser

__all__ = ["OpenAISDKUser"]
