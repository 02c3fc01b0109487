"""The FastAPI app: auth, validation, rate limits, then a streaming pass-through to vLLM.

Routes:

- `POST /v1/chat/completions`, `POST /v1/completions`: API key (401), validation (400/404/413), the key's token
  buckets (429 + `Retry-After`), then relayed (`gateway.proxy`); the upstream's status and body are passed on as
  they are, 502/504 when it cannot be reached in time.
- `GET /v1/models`, `POST /tokenize`, `POST /detokenize`, `GET /version`: API key, then relayed (not rate-limited:
  the suite calls them a handful of times before load).
- `GET /health`: 200 when the upstream's /health is 200, else 503 (no key needed).
- `GET /metrics`: the gateway's own Prometheus metrics (`gateway.metrics`; no key needed, no key inside).

Every error the gateway itself answers has OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.config import GatewayConfig, KeyConfig, verify_key
from gateway.limits import Decision, KeyLimiter, Reservation
from gateway.logs import JsonLog
from gateway.metrics import UNAUTHENTICATED, GatewayMetrics
from gateway.proxy import RelayResponse, RelayStats, Upstream
from gateway.validation import ApiError, Checked, check_request

ROUTE_CHAT = "/v1/chat/completions"
ROUTE_COMPLETIONS = "/v1/completions"


@dataclass(slots=True)
class Exchange:
    """One request's bookkeeping, from arrival to its log line."""

    request_id: str
    method: str
    path: str
    route: str
    t_received: float
    key_id: str = UNAUTHENTICATED
    checked: Checked | None = None
    reservation: Reservation | None = None
    t_sent: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """The state behind the app: config, keys, limiters, upstream pool, metrics, log."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: JsonLog | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.keys: list[KeyConfig] = list(config.keys)
        self.limiters = {k.id: KeyLimiter(config.limits_for(k), clock) for k in config.keys}
        self.metrics = GatewayMetrics()
        self.log = log if log is not None else JsonLog(config.log.path)
        self._transport = transport
        self.upstream: Upstream | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)

    # -------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.upstream = Upstream(self.config, self._transport)
        self.log.emit(
            "start", upstream=self.config.upstream, keys=[k.id for k in self.keys],
            listen=f"{self.config.listen.host}:{self.config.listen.port}",
        )  # fmt: skip

    async def stop(self) -> None:
        if self.upstream is not None:
            await self.upstream.aclose()
        self.log.emit("stop")

    def new_exchange(self, request: Request, route: str) -> Exchange:
        rid = f"gw-{self._id_prefix}-{next(self._ids):08d}"
        return Exchange(rid, request.method, request.url.path, route, time.perf_counter())

    # ------------------------------------------------------------------------------------------------- auth
    def authenticate(self, request: Request) -> KeyConfig:
        """The configured key the request's `Authorization: Bearer <key>` matches; ApiError 401 otherwise."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(
                401, "missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key",
                headers={"www-authenticate": "Bearer"}, reason="auth",
            )  # fmt: skip
        for key in self.keys:
            if verify_key(presented, key.hash):
                return key
        raise ApiError(401, "invalid API key", code="invalid_api_key", headers={"www-authenticate": "Bearer"},
                       reason="auth")  # fmt: skip

    # ---------------------------------------------------------------------------------------------- answers
    def reject(self, ex: Exchange, err: ApiError) -> Response:
        self.metrics.rejected.labels(ex.key_id, err.reason).inc()
        self._finish(ex, err.status, outcome="rejected", reason=err.reason, message=err.message)
        headers = {"x-request-id": ex.request_id, **err.headers}
        return Response(err.body(), status_code=err.status, media_type="application/json", headers=headers)

    def _finish(self, ex: Exchange, status: int, **fields: Any) -> None:
        now = time.perf_counter()
        self.metrics.requests.labels(ex.key_id, ex.route, str(status)).inc()
        self.metrics.duration.labels(ex.route).observe(now - ex.t_received)
        checked = ex.checked
        record: dict[str, Any] = {
            "request_id": ex.request_id, "key_id": ex.key_id, "method": ex.method, "path": ex.path,
            "model": checked.model if checked else None, "status": status,
        }  # fmt: skip
        record.update(fields)
        record["admit_ms"] = None if ex.t_sent is None else round((ex.t_sent - ex.t_received) * 1000, 3)
        record.update(ex.fields)
        record["duration_ms"] = round((now - ex.t_received) * 1000, 3)
        if checked is not None:
            record.update(prompt_tokens_estimate=checked.prompt_tokens_estimate, max_tokens=checked.max_tokens)
        self.log.emit("request", **record)

    # ------------------------------------------------------------------------------------------------ relay
    async def relay(self, request: Request, ex: Exchange, body: bytes) -> Response:
        """Send upstream and relay the answer; 502/504 when the upstream cannot be reached."""
        assert self.upstream is not None
        headers = self.upstream.forward_headers(request.headers.raw)
        ex.t_sent = time.perf_counter()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream = await self.upstream.send(request.method, path, headers, body)
        except httpx.TimeoutException:
            self._refund(ex)
            raise ApiError(
                504,
                f"the upstream server did not answer in time ({self.upstream.base_url})",
                type="upstream_error",
                code="upstream_timeout",
                reason="upstream_timeout",
            ) from None
        except httpx.HTTPError as exc:
            self._refund(ex)
            raise ApiError(502, f"the upstream server cannot be reached: {type(exc).__name__}",
                           type="upstream_error", code="upstream_unreachable",
                           reason="upstream_unreachable") from None  # fmt: skip
        self.metrics.in_flight.inc()
        stats = RelayStats(t_sent=ex.t_sent)
        return RelayResponse(upstream, stats, lambda s: self._relayed(ex, upstream.status_code, s),
                             {"x-request-id": ex.request_id})  # fmt: skip

    def _refund(self, ex: Exchange) -> None:
        if ex.reservation is not None:
            ex.reservation.refund()

    def _relayed(self, ex: Exchange, status: int, stats: RelayStats) -> None:
        m = self.metrics
        m.in_flight.dec()
        m.relayed_bytes.labels(ex.route).inc(stats.n_bytes)
        m.relayed_events.labels(ex.route).inc(stats.events)
        if stats.t_first is not None:
            m.upstream_ttft.labels(ex.route).observe(stats.t_first - stats.t_sent)
        usage = stats.usage() if status < 300 else None
        charged = None
        if ex.reservation is not None:
            charged = (
                ex.reservation.refund() if status >= 400 else ex.reservation.settle(usage.total if usage else None)
            )
            if self.limiters[ex.key_id].tokens is not None:
                m.tokens_charged.labels(ex.key_id).inc(charged)
        if stats.client_gone:
            outcome, logged_status = "client_disconnected", 499
        elif stats.broken:
            outcome, logged_status = "upstream_broken", status
        else:
            outcome, logged_status = ("ok" if status < 400 else "upstream_error"), status
        ex.fields.update(
            upstream_ttft_ms=None if stats.t_first is None else round((stats.t_first - stats.t_sent) * 1000, 3),
            bytes=stats.n_bytes, events=stats.events,
            tokens_reserved=ex.reservation.reserved if ex.reservation else None, tokens_charged=charged,
            usage_prompt_tokens=usage.prompt_tokens if usage else None,
            usage_completion_tokens=usage.completion_tokens if usage else None,
        )  # fmt: skip
        if stats.broken:
            ex.fields["error"] = stats.broken
        self._finish(ex, logged_status, outcome=outcome)

    # ------------------------------------------------------------------------------------------ rate limits
    def admit(self, ex: Exchange, key: KeyConfig, checked: Checked) -> Decision:
        decision = self.limiters[key.id].admit(checked.cost)
        if decision.admitted:
            ex.reservation = decision.reservation
            ex.fields["tokens_reserved"] = checked.cost
            return decision
        limits = self.config.limits_for(key)
        headers: dict[str, str] = {}
        if decision.retry_after_header is not None:
            headers["retry-after"] = decision.retry_after_header
        if limits.requests_per_s is not None:
            headers["x-ratelimit-limit-requests"] = f"{limits.requests_per_s:g}/s"
            headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(decision.remaining_requests or 0)))
        if limits.tokens_per_min is not None:
            headers["x-ratelimit-limit-tokens"] = f"{limits.tokens_per_min:g}/min"
            headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(decision.remaining_tokens or 0)))
        if decision.reason == "too_large":
            raise ApiError(
                429, f"request too large for key '{key.id}': it may use {checked.cost} tokens (prompt estimate + "
                f"max_tokens), above the key's burst of {limits.token_capacity:g} tokens per minute",
                type="tokens", code="request_too_large", headers=headers, reason="too_large",
            )  # fmt: skip
        what = "requests per second" if decision.reason == "requests" else "tokens per minute"
        limit = f"{limits.requests_per_s:g}/s" if decision.reason == "requests" else f"{limits.tokens_per_min:g}/min"
        raise ApiError(
            429, f"rate limit reached for key '{key.id}' on {what} (limit {limit}); retry after "
            f"{headers.get('retry-after', '?')} s",
            type=decision.reason, code="rate_limit_exceeded", headers=headers, reason=f"rate_{decision.reason}",
        )  # fmt: skip


def create_app(
    config: GatewayConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    log: JsonLog | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The gateway app. `clock` drives the token buckets (tests pass a fake one); `transport` replaces the
    network towards the upstream (tests)."""
    gw = Gateway(config, clock=clock, log=log, transport=transport)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(title="vlab gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.gateway = gw

    async def completion(request: Request, chat: bool) -> Response:
        ex = gw.new_exchange(request, "chat" if chat else "completions")
        try:
            key = gw.authenticate(request)
            ex.key_id = key.id
            ex.checked = checked = check_request(await request.body(), chat, config.validation)
            gw.admit(ex, key, checked)
            return await gw.relay(request, ex, checked.body)
        except ApiError as err:
            return gw.reject(ex, err)

    @app.post(ROUTE_CHAT)
    async def chat_completions(request: Request) -> Response:
        return await completion(request, chat=True)

    @app.post(ROUTE_COMPLETIONS)
    async def completions(request: Request) -> Response:
        return await completion(request, chat=False)

    async def passthrough(request: Request, route: str, auth: bool = True) -> Response:
        ex = gw.new_exchange(request, route)
        try:
            if auth:
                ex.key_id = gw.authenticate(request).id
            body = await request.body()
            if len(body) > config.validation.max_body_bytes:
                raise ApiError(413, "request body too large", code="body_too_large")
            return await gw.relay(request, ex, body)
        except ApiError as err:
            return gw.reject(ex, err)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await passthrough(request, "models")

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        return await passthrough(request, "tokenize")

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        return await passthrough(request, "detokenize")

    @app.get("/version")
    async def version(request: Request) -> Response:
        return await passthrough(request, "version", auth=False)

    @app.get("/health")
    async def health() -> Response:
        assert gw.upstream is not None
        try:
            answer = await gw.upstream.client.get("/health", timeout=2.0)
            ok, detail = answer.status_code == 200, f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, type(exc).__name__
        body = {"status": "ok" if ok else "degraded", "upstream": detail}
        return Response(json.dumps(body).encode(), status_code=200 if ok else 503, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gw.metrics.render(), media_type=gw.metrics.content_type)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        err = ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return Response(err.body(), status_code=exc.status_code, media_type="application/json")

    return app
