"""An OpenAI-compatible gateway in front of vLLM: API keys, request validation, per-key rate limits, streaming
pass-through without buffering, Prometheus metrics and JSON logs. See docs/gateway.md.

    python -m gateway hash-key --generate          # a new key (printed once) and its hash for the config
    python -m gateway --config gateway/example.yaml
"""
