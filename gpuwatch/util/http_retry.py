"""When an HTTP answer is worth asking again, and how long the server asked us to wait.

One reading of these for every client gpuwatch speaks through (the Kubernetes API, the
state and silences ConfigMaps), so that they back off alike.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime


def retryable_status(status: int) -> bool:
    """429 (API priority and fairness, rate limits) and 5xx (a server restarting behind
    a load balancer, an etcd timeout) may pass; 501 and 505 will not get better."""
    return status == 429 or (500 <= status <= 599 and status not in (501, 505))


def retry_after_s(value: object, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header value, delta-seconds or an HTTP date; None
    when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def backoff_s(
    attempt: int,
    retry_after: object,
    now: datetime,
    initial_s: float,
    max_s: float,
) -> float:
    """How long to wait before retry number ``attempt`` (0 first): the server's
    ``Retry-After`` when it gave one, else exponential from ``initial_s`` with jitter
    (half fixed, half random, so that clients retrying together do not stay in step);
    never more than ``max_s``."""
    after = retry_after_s(retry_after, now)
    if after is not None:
        return min(after, max_s)
    base = min(initial_s * 2.0**attempt, max_s)
    return base / 2 + random.uniform(0, base / 2)
