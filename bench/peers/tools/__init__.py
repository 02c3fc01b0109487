"""One adapter per load tool: how to drive it through its CLI, and how to read its own output files."""

from __future__ import annotations

from bench.peers.tools.aiperf import AIPerf
from bench.peers.tools.base import Capabilities, Command, Tool
from bench.peers.tools.genai_bench import GenaiBench
from bench.peers.tools.guidellm import GuideLLM
from bench.peers.tools.inference_perf import InferencePerf
from bench.peers.tools.suite import Suite
from bench.peers.tools.vllm_bench import VllmBench

TOOLS: dict[str, Tool] = {
    t.name: t for t in (Suite(), GuideLLM(), AIPerf(), GenaiBench(), InferencePerf(), VllmBench())
}
"""Every tool by name; the suite first."""

__all__ = ["TOOLS", "Capabilities", "Command", "Tool"]
