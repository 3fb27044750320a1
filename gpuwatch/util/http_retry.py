"""When an HTTP answer is worth asking again, and how long the server asked us to wait.

One reading of these for every client gpuwatch speaks through (the Kubernetes API, the
state and silences ConfigMaps), so that they back off alike.
"""

from __future__ import annotations

import email.utils
import math
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
