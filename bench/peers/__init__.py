"""Head to head with the load tools users would pick instead (GitHub issue 17): GuideLLM, NVIDIA AIPerf,
genai-bench, inference-perf and `vllm bench serve`, each driven through its own CLI on the same workload and server
as the suite, each result read from the tool's own output files. See docs/peers.md."""
