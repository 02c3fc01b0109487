"""Per-key token buckets: requests per second and tokens per minute.

A bucket holds `level` units, at most `capacity`. It refills continuously:
`level = min(capacity, level + rate × (now − last))`, `rate` in units per second (tokens/min ÷ 60 for tokens).

Admission of one request with `cost` tokens (the rule, in order):

1. `cost = prompt_tokens_estimate + max_tokens × n` (max_tokens as forwarded: the request's or the cap inserted).
2. If `cost` exceeds the token bucket's capacity the request can never pass: rejected (`too_large`), no Retry-After.
3. The request is admitted only if the request bucket holds ≥ 1 and the token bucket holds ≥ `cost`; then 1 and
   `cost` are taken. Otherwise nothing is taken and it is rejected with
   `retry_after_s = max((1 − req.level) / req.rate, (cost − tok.level) / tok.rate)` over the buckets that are short
   (sent as `Retry-After: ceil(retry_after_s)`, at least 1).
4. When the response ends, the token reservation is reconciled: `actual = usage.prompt_tokens +
   usage.completion_tokens` from the response's `usage`, and `reserved − actual` is given back (added to the level,
   capped at capacity). `actual` above the reservation (the prompt estimate was low) drives the level below zero:
   a debt that the refill repays before the key's next request passes. Without a `usage` object (a stream that
   did not ask for it, or cut short) the reservation stands, charged in full. An upstream error status (no tokens
   generated) gives the whole reservation back. The request unit is never given back.

One asyncio loop owns the buckets, so no locking is needed. Times are `time.monotonic()` seconds unless a clock is
passed (tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import Limits


@dataclass(slots=True)
class TokenBucket:
    """`capacity` units, refilled at `rate` units per second, starting full."""

    capacity: float
    rate: float
    level: float = math.nan
    last: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.level):
            self.level = self.capacity

    def refill(self, now: float) -> None:
        if not math.isnan(self.last) and now > self.last:
            self.level = min(self.capacity, self.level + self.rate * (now - self.last))
        self.last = now if math.isnan(self.last) else max(self.last, now)

    def wait_s(self, cost: float) -> float:
        """Seconds until the level reaches `cost` (0 if it already has); call `refill` first."""
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def give_back(self, units: float) -> None:
        """Add `units` (negative: charge more), never above capacity."""
        self.level = min(self.capacity, self.level + units)


@dataclass(slots=True)
class Decision:
    """The outcome of one admission. On refusal `reason` is `requests`, `tokens` or `too_large`."""

    admitted: bool
    reason: str = ""
    retry_after_s: float | None = None
    cost: int = 0
    reservation: Reservation | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None

    @property
    def retry_after_header(self) -> str | None:
        """`Retry-After` in whole seconds, rounded up, at least 1 (None when retrying cannot help)."""
        if self.retry_after_s is None:
            return None
        return str(max(1, math.ceil(self.retry_after_s - 1e-9)))


@dataclass(slots=True)
class Reservation:
    """Tokens taken at admission, to be reconciled once with what the response used."""

    limiter: KeyLimiter
    reserved: int
    settled: bool = field(default=False)
    charged: int = field(default=0)

    def settle(self, actual_tokens: int | None) -> int:
        """Reconcile with `actual_tokens` (usage prompt + completion); None keeps the full reservation. Returns
        the tokens finally charged. Idempotent: only the first call counts."""
        if self.settled:
            return self.charged
        self.settled = True
        self.charged = self.reserved if actual_tokens is None else max(0, int(actual_tokens))
        bucket = self.limiter.tokens
        if bucket is not None and self.charged != self.reserved:
            bucket.refill(self.limiter.clock())
            bucket.give_back(self.reserved - self.charged)
        return self.charged

    def refund(self) -> int:
        """Nothing was generated (upstream error): the whole reservation comes back."""
        return self.settle(0)


class KeyLimiter:
    """The two buckets of one key (either may be None: no limit of that kind)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.requests = (
            TokenBucket(limits.request_capacity, limits.requests_per_s) if limits.requests_per_s is not None else None
        )
        self.tokens = (
            TokenBucket(limits.token_capacity, limits.tokens_per_min / 60.0)
            if limits.tokens_per_min is not None
            else None
        )

    def admit(self, cost: int) -> Decision:
        """Apply the admission rule (module docstring) to a request of `cost` tokens."""
        now = self.clock()
        req, tok = self.requests, self.tokens
        if tok is not None and cost > tok.capacity:
            return Decision(False, "too_large", None, cost, remaining_tokens=tok.level)
        waits: list[tuple[float, str]] = []
        if req is not None:
            req.refill(now)
            if req.level < 1.0:
                waits.append((req.wait_s(1.0), "requests"))
        if tok is not None:
            tok.refill(now)
            if tok.level < cost:
                waits.append((tok.wait_s(float(cost)), "tokens"))
        if waits:
            wait, reason = max(waits)
            return Decision(
                False,
                reason,
                wait,
                cost,
                remaining_requests=req.level if req else None,
                remaining_tokens=tok.level if tok else None,
            )
        if req is not None:
            req.level -= 1.0
        if tok is not None:
            tok.level -= cost
        return Decision(
            True,
            cost=cost,
            reservation=Reservation(self, cost),
            remaining_requests=req.level if req else None,
            remaining_tokens=tok.level if tok else None,
        )
