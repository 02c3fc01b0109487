"""Retrieve-then-generate load: questions answered from a PDF collection, retrieval timed apart from TTFT/ITL.

locust -f locustfiles/rag_load.py --scenario scenarios/rag.yaml --headless
"""

from vlab.locust_plugin import shape_from_argv
from vlab.rag_user import RagUser

__all__ = ["RagUser"]

ScenarioShape = shape_from_argv()
