"""Retrieve-then-generate load: questions answered from a PDF collection, retrieval timed apart from TTFT/ITL.

locust -f locustfiles/rag_load.py --scenario scenarios/rag.yaml --headless
"""

from rag.load_user import RagUser
from vlab.locust.plugin import shape_from_argv

__all__ = ["RagUser"]

ScenarioShape = shape_from_argv()
