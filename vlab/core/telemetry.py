"""The columns of the samplers' files in a run folder, shared by the samplers (`vlab.telemetry`) that write them
and the report (`analysis`) that reads them.

`server_metrics.csv` (`vlab.telemetry.server_metrics`): one row per /metrics sample; `t_s` is the wall-clock Unix
time (seconds) of the middle of the HTTP exchange, `scrape_ms` its wall time, `cpu_ms` the sampler's CPU time for it.
Then one column per canonical metric, summed over label sets (the KV usage fraction is averaged); an empty cell
means the server does not export that metric:

- gauges: `running`, `waiting` (requests), `kv_cache_usage` (fraction 0–1);
- counters, cumulative since server start: `preemptions`, `prefix_queries`, `prefix_hits` (tokens), `prompt_tokens`,
  `generation_tokens`;
- histograms: `<name>_sum` (seconds) and `<name>_count` (observations) of `ttft`, `itl`, `e2e`, `queue_time`.
"""

from __future__ import annotations

SERVER_GAUGES: tuple[str, ...] = ("running", "waiting", "kv_cache_usage")
SERVER_COUNTERS: tuple[str, ...] = (
    "preemptions",
    "prefix_queries",
    "prefix_hits",
    "prompt_tokens",
    "generation_tokens",
)
SERVER_HISTOGRAMS: tuple[str, ...] = ("ttft", "itl", "e2e", "queue_time")
SERVER_COLUMNS: tuple[str, ...] = (
    *SERVER_GAUGES,
    *SERVER_COUNTERS,
    *(f"{name}_{part}" for name in SERVER_HISTOGRAMS for part in ("sum", "count")),
)
SERVER_CSV_HEADER = ",".join(("t_s", "scrape_ms", "cpu_ms", *SERVER_COLUMNS))
