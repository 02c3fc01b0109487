"""The observations across engines (`analysis.engines`) on per-level tables shaped like the summary's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from analysis.engines import EngineRun, change, observe_engines


def _level(level: int, target: float, ttft: float, itl: float, tps: float, n: int = 40, spread: float = 0.05) -> dict:
    """One summary row: p50s with ±`spread` intervals, output tok/s with its interval."""
    row: dict[str, Any] = {"level": level, "target": target, "n_measured": n}
    for key, value in (("ttft_p50", ttft), ("itl_p50", itl)):
        row[key], row[f"{key}_lo"], row[f"{key}_hi"] = value, value * (1 - spread), value * (1 + spread)
    row["output_tok_per_s"], row["output_tok_per_s_lo"], row["output_tok_per_s_hi"] = tps, tps * 0.95, tps * 1.05
    return row


def _summary(rows: list[dict], prompt: int = 64, completion: int = 32) -> Any:
    requests = pd.DataFrame(
        [{"level": r["level"], "ok": True, "prompt_tokens": prompt, "completion_tokens": completion} for r in rows]
    )
    return SimpleNamespace(table=pd.DataFrame(rows), run=SimpleNamespace(open_loop=False, requests=requests))


STATIC = _summary([_level(0, 1, 400, 100, 9.0, n=10), _level(1, 8, 3000, 135, 10.0, n=12)])
CB = _summary([_level(0, 1, 410, 102, 9.1, n=10), _level(1, 8, 900, 210, 30.0)])
VLLM = _summary([_level(0, 1, 60, 20, 45.0), _level(1, 8, 150, 45, 150.0)])


def test_change_needs_separated_intervals() -> None:
    a, b = STATIC.table.iloc[0], CB.table.iloc[0]
    c = change(a, b, "ttft")
    assert c.verdict == "same" and abs(c.ratio - 410 / 400) < 1e-9 and (c.n_a, c.n_b) == (10, 10)
    assert change(STATIC.table.iloc[1], CB.table.iloc[1], "output_tok_per_s").verdict == "diff"
    nan_row = STATIC.table.iloc[0].copy()
    nan_row["itl_p50_lo"] = float("nan")
    assert change(nan_row, b, "itl").verdict == "unknown"


def test_what_batching_buys_is_computed_from_the_levels() -> None:
    runs = [
        EngineRun("vllm", VLLM, True, 93_184),
        EngineRun("tf", STATIC, False),
        EngineRun("tf-cb", CB, True, 8192),
    ]
    lines = observe_engines(runs)
    text = "\n".join(lines)
    # one user: the batched Transformers server is no different; vLLM is faster, and not because of batching
    assert "At 1 user, tf-cb against tf: TTFT p50 1.02x, within the 95% intervals" in text
    assert "no measurable difference: with one request in flight there is no batch" in text
    assert "At 1 user, vllm against tf: TTFT p50 0.15x" in text and "the engine's own kernels" in text
    # eight users: throughput scaling per engine, and what continuous batching buys over the unbatched server
    assert "Output throughput from 1 user to 8 users: vllm 3.3x, tf 1.1x, tf-cb 3.3x." in text
    assert "At 8 users, tf-cb's continuous batching buys 3.0x the output tok/s of tf (n = 12 vs 40)." in text
    assert (
        "tf-cb, 1 user → 8 users: output tok/s 3.3x, TTFT p50 2.20x (n = 10 vs 40), ITL p50 2.06x (n = 10 vs 40): "
        "the requests share each decode step (8x the users, 3.3x the tokens/s for 2.06x the gap between tokens)"
    ) in text
    # the unbatched server: throughput flat, TTFT 7.5x → one request after another (even with ITL up on a busy machine)
    assert "tf, 1 user → 8 users: output tok/s 1.1x, TTFT p50 7.50x (n = 10 vs 12), ITL p50 1.35x" in text
    assert "requests are served one after another (throughput stays while TTFT grows 8x" in text
    # the KV cache: 8 × (64 + 32) = 768 tokens, 9.4% of 8,192
    assert "tf-cb: 8 users × 96 tokens" in text and "768 tokens" in text and "9.4% of its 8,192 tokens" in text
    assert "never fills it" in text
    assert not any(line.startswith("tf: ") for line in lines)  # no capacity known for the unbatched server


def test_nothing_said_without_common_levels_or_for_open_loop() -> None:
    other = _summary([_level(0, 2, 100, 10, 5.0)])
    assert observe_engines([EngineRun("a", STATIC, False), EngineRun("b", other, True)]) == []
    open_loop = _summary([_level(0, 1, 100, 10, 5.0)])
    open_loop.run.open_loop = True
    assert observe_engines([EngineRun("a", STATIC, False), EngineRun("b", open_loop, True)]) == []
