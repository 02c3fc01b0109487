"""Retrieve-then-generate load: questions answered from a PDF collection, retrieval timed apart from TTFT/ITL.

locust -f locustfiles/rag_load.py --scenario scenarios/rag.yaml --headless
"""

from rag.load_user import RagUser
from vlab.locust import plugin  # noqa: F401  (registers the suite's Locust hooks)

__all__ = ["RagUser"]
