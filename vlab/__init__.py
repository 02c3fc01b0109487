"""vllm-inference-lab: Locust-driven load testing for vLLM's OpenAI-compatible API."""

__version__ = "0.1.0"
