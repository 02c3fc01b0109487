"""The gateway's own Prometheus metrics, served at `GET /metrics` (its own registry, not the process-global one).

Labels carry the key's configured `id` (`-` before authentication), never the key. Names:

- `gateway_requests_total{key_id, route, status}`: requests answered, by HTTP status (499: client went away first);
- `gateway_rejected_total{key_id, reason}`: refused by the gateway itself; reason `auth`, `validation`,
  `rate_requests`, `rate_tokens`, `too_large`, `upstream_unreachable`, `upstream_timeout`;
- `gateway_upstream_ttft_seconds{route}`: histogram, upstream request sent → first body bytes received;
- `gateway_request_duration_seconds{route}`: histogram, request received → last byte relayed;
- `gateway_relayed_bytes_total{route}` and `gateway_relayed_events_total{route}`: body bytes and SSE events
  (`\\n\\n`-terminated) relayed to clients;
- `gateway_tokens_charged_total{key_id}`: tokens charged to the tokens/min buckets after reconciliation;
- `gateway_in_flight`: requests being relayed now.

Counters are updated once per request (at its end), never per relayed chunk.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNAUTHENTICATED = "-"
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """One registry per app instance (tests build many apps in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests answered, by key id, route and HTTP status.", ("key_id", "route", "status"),
            registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "gateway_rejected", "Requests refused by the gateway, by key id and reason.", ("key_id", "reason"),
            registry=r,
        )  # fmt: skip
        self.upstream_ttft = Histogram(
            "gateway_upstream_ttft_seconds", "Upstream request sent to first body bytes, seconds.", ("route",),
            buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Request received to last byte relayed, seconds.", ("route",),
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.relayed_bytes = Counter("gateway_relayed_bytes", "Body bytes relayed to clients.", ("route",), registry=r)
        self.relayed_events = Counter(
            "gateway_relayed_events", "SSE events relayed to clients.", ("route",), registry=r
        )
        self.tokens_charged = Counter(
            "gateway_tokens_charged", "Tokens charged to tokens/min buckets (after reconciliation).", ("key_id",),
            registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("gateway_in_flight", "Requests being relayed now.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
