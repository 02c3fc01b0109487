"""The request both measured clients send the fake SSE server (`ref_client.py`, `stream_harness.py`): 16 random
words, `max_tokens` with `ignore_eos`, streaming with the usage chunk — the workload of `client_bench.py`."""

from __future__ import annotations

import json
import random

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def request_body(rng: random.Random, chat: bool, max_tokens: int) -> bytes:
    """The JSON body of one chat or completions request."""
    prompt = " ".join(rng.choices(WORDS, k=16))
    body: dict = {
        "model": "fake",
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return json.dumps(body).encode()
