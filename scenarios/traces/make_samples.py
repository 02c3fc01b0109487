"""Write the two sample traces the suite ships (deterministic: the same files every run).

    python scenarios/traces/make_samples.py        # rewrites sample-mooncake.jsonl and sample-burstgpt.csv here

Both are synthetic, made by this script, not excerpts of the published traces; they follow those traces' formats so a
replay of the real ones works the same way. Sizes fit the local CPU server (SmolLM2, 2,048-token context):

- `sample-mooncake.jsonl`: 48 requests over 44 s, bursty arrivals (gamma gaps, shape 0.5, mean 1 s). Four
  "applications" each have a system prompt of 2 blocks; a request is a new conversation (the system prompt's blocks,
  then 1–3 new blocks) or, half the time, the next turn of one of the last conversations (its blocks, then 1–2 new
  ones), as in Mooncake's conversation trace. Blocks of 128 tokens (the scenario sets `block_tokens: 128`; Mooncake's
  own traces use 512), the last block partial; outputs 8–48 tokens.
- `sample-burstgpt.csv`: 40 requests over 44 s in BurstGPT's columns, Poisson arrivals (mean gap 1 s), request
  tokens 32–600 (log-uniform), response tokens 8–64; two rows log failures with 0 response tokens (BurstGPT does):
  the replay skips and counts them.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = 128


def mooncake(rng: random.Random, n: int = 48) -> list[dict]:
    next_block = 0

    def new_blocks(k: int) -> list[int]:
        nonlocal next_block
        ids = list(range(next_block, next_block + k))
        next_block += k
        return ids

    systems = [new_blocks(2) for _ in range(4)]
    conversations: list[list[int]] = []
    rows, t_ms = [], 0.0
    for _ in range(n):
        t_ms += rng.gammavariate(0.5, 2.0) * 1000.0
        if conversations and rng.random() < 0.5:
            chain = rng.choice(conversations[-4:])
            chain = chain + new_blocks(rng.randint(1, 2))
        else:
            chain = rng.choice(systems) + new_blocks(rng.randint(1, 3))
        if len(chain) > 12:  # keep prompt + output inside a 2,048-token context
            chain = rng.choice(systems) + new_blocks(1)
        conversations.append(chain)
        length = len(chain) * BLOCK - rng.randint(0, BLOCK - 1)
        rows.append({"timestamp": round(t_ms), "input_length": length, "output_length": rng.randint(8, 48),
                     "hash_ids": chain})  # fmt: skip
    return rows


def burstgpt(rng: random.Random, n: int = 40) -> list[list[object]]:
    rows, t = [], 0.0
    failures = set(rng.sample(range(n), 2))
    for i in range(n):
        t += rng.expovariate(1.0)
        request = round(math.exp(rng.uniform(math.log(32), math.log(600))))
        response = 0 if i in failures else rng.randint(8, 64)
        model = "ChatGPT" if rng.random() < 0.8 else "GPT-4"
        rows.append([round(t, 3), model, request, response, request + response, "Conversation log"])
    return rows


def main() -> None:
    rng = random.Random(19)
    with (HERE / "sample-mooncake.jsonl").open("w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in mooncake(rng))
    with (HERE / "sample-burstgpt.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"])
        writer.writerows(burstgpt(rng))


if __name__ == "__main__":
    main()
