"""The scenario's workload through the official openai SDK — a comparison path, NOT a measurement path.

    locust -f locustfiles/openai_sdk.py --scenario scenarios/demo.yaml --headless

Same scenarios, records and reports as `locustfiles/llm.py`, but every token is stamped after the SDK has decoded
its chunk, and one process saturates far earlier (see `vlab/sdk_user.py` and docs/performance.md). Runs are marked
`"client": "openai-sdk"` in run.json, and the terminal and the report say so.
"""

from vlab.locust.plugin import shape_from_argv
from vlab.locust.sdk_user import OpenAISDKUser

__all__ = ["OpenAISDKUser"]

ScenarioShape = shape_from_argv()  # None when the web UI's form drives the user count
