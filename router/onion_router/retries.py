"""When to ask a layer again after it said "not now": pure arithmetic, no I/O.

A layer that is not managed by this router (another Onion's router, a hosted API) may answer
429 or 503 with Retry-After while one of its own layers wakes or its queue is full. The router
then waits as told and asks again, for at most the layer's wakeTimeoutSeconds in all.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

RETRYABLE = frozenset({429, 503})
MIN_DELAY = 0.25  # never hammer a layer that said "0"


def retry_delay(
    status: int, retry_after: float | None, waited: float, timeout: float
) -> float | None:
    """Seconds to wait before asking again, or None to give up and pass the refusal on.

    Only refusals that say when to come back are retried, and only while the wait ends
    within `timeout` seconds of the first attempt (`waited` seconds ago)."""
    if status not in RETRYABLE or retry_after is None or timeout <= 0:
        return None
    delay = max(MIN_DELAY, retry_after)
    if waited + delay > timeout:
        return None
    return delay


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
