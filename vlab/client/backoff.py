"""How long a closed-loop user waits before its next request after one was refused (no Locust, no gevent: the
policy is plain arithmetic, the user does the sleeping).

A dead or overloaded server answers in microseconds, so a user that retried at once would record thousands of
identical failures per second. `wait_after` gives:

- a refused connection: `CONNECT_BACKOFF_S`;
- an HTTP error answer: the server's `Retry-After` (429 or 503; delta-seconds or an HTTP date), at most
  `RETRY_AFTER_MAX_S`, or else `ERROR_BACKOFF_S[0] · 2^n` capped at `ERROR_BACKOFF_S[1]`, with n the failures in a
  row before this one;
- anything else (a stream, even one that failed mid-way): no wait, and the count of failures in a row resets.
"""

from __future__ import annotations

import email.utils
import time

from vlab.core.records import ErrorKind

CONNECT_BACKOFF_S = 0.5
"""A closed-loop user's wait after its server refused the connection, s."""
ERROR_BACKOFF_S = (0.05, 2.0)
"""A closed-loop user's wait after an HTTP error answer (no stream): first and longest, s; it doubles per failure in a
row and resets after a success."""
RETRY_AFTER_MAX_S = 30.0
"""The longest `Retry-After` (429/503) a closed-loop user honours, s."""


def retry_after_s(value: str | None) -> float | None:
    """A `Retry-After` header's wait in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def wait_after(error_kind: str, status: int, retry_after: str | None, failures_in_a_row: int) -> float | None:
    """Seconds to wait before the next request (see the module docstring); None: no wait, reset the count."""
    if error_kind == ErrorKind.CONNECT:
        return CONNECT_BACKOFF_S
    if status >= 400 or error_kind in (ErrorKind.HTTP, ErrorKind.RATE_LIMITED):
        wait = retry_after_s(retry_after)
        if wait is None:
            first, longest = ERROR_BACKOFF_S
            wait = min(first * 2**failures_in_a_row, longest)
        return min(wait, RETRY_AFTER_MAX_S)
    return None
