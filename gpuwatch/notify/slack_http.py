"""How the Slack notifiers treat Slack's HTTP: retries, rate limits, pacing, failures.

slack_sdk retries only what its retry handlers say. gpuwatch adds them for 429 (capped:
a ``Retry-After`` longer than ``max_retry_after_s`` leaves the message for the next
cycle rather than stalling this one), connection errors and 5xx answers, with separate
budgets. Messages to one channel are paced so that Slack has no reason to answer 429
in the first place. ``Retry-After`` is read the way every gpuwatch client reads it
(``gpuwatch.util.http_retry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.error import URLError

from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.base import DeliveryResult
from gpuwatch.util.http_retry import retry_after_s as read_retry_after

Clock = Callable[[], float]
Sleep = Callable[[float], None]
_DEFAULT_RETRY_AFTER_S = 1.0
"""What slack_sdk waits when a 429 carries no Retry-After (Slack always sends one)."""


def retry_handlers(settings: SlackSettings, sleep: Sleep = time.sleep) -> list[RetryHandler]:
    """slack_sdk's retry handlers as the settings ask: 429s waited out up to
    ``max_retry_after_s``, connection errors and 500/503 retried with backoff."""
    return [
        CappedRateLimitRetryHandler(
            max_retry_count=settings.rate_limit_retries,
            max_retry_after_s=settings.max_retry_after_s,
            sleep=sleep,
        ),
        ConnectionErrorRetryHandler(max_retry_count=settings.connection_retries),
        ServerErrorRetryHandler(max_retry_count=settings.connection_retries),
    ]


class CappedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Waits out a 429 for exactly its ``Retry-After``, unless that is longer than
    ``max_retry_after_s``: then it gives up at once and the 429 is the answer.

    slack_sdk's own handler waits whatever Slack asks (plus up to a second of jitter),
    which can stall a cycle for minutes, and fails on a fractional ``Retry-After``.
    """

    def __init__(
        self, *, max_retry_count: int, max_retry_after_s: float, sleep: Sleep = time.sleep
    ) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait_s = retry_after_s(response.headers)
        return wait_s is None or wait_s <= self.max_retry_after_s

    def prepare_for_next_attempt(
        self, *, state: RetryState, response: HttpResponse | None = None, **_: Any
    ) -> None:
        """Sleep the ``Retry-After`` this handler agreed to wait out (``_can_retry``)."""
        wait_s = retry_after_s(response.headers) if response is not None else None
        state.next_attempt_requested = True
        self._sleep(_DEFAULT_RETRY_AFTER_S if wait_s is None else wait_s)
        state.increment_current_attempt()


def retry_after_s(headers: Mapping[str, Any]) -> float | None:
    """The ``Retry-After`` of a response in seconds (headers as slack_sdk passes them:
    values plain or in lists, any case), or None when absent or unreadable."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            first = value[0] if isinstance(value, list | tuple) and value else value
            return read_retry_after(first, datetime.now(UTC))
    return None


def rate_limited(headers: Mapping[str, Any], max_retry_after_s: float) -> DeliveryResult:
    """The result of a 429 that was not (or no longer) waited out: not permanent, the
    next cycle tries again."""
    wait_s = retry_after_s(headers)
    if wait_s is None:
        return DeliveryResult(ok=False, error="rate limited by Slack (no Retry-After)")
    if wait_s > max_retry_after_s:
        why = f", more than the {max_retry_after_s:g} s waited out within a cycle)"
    else:
        why = "), retries used up"
    return DeliveryResult(ok=False, error=f"rate limited by Slack (Retry-After {wait_s:g} s{why}")


def transport_error(exc: BaseException, where: str, timeout_s: float) -> str:
    """Words for an answer that never came: a timeout, a refused connection, a bad URL."""
    reason: object = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"{where} did not answer within {timeout_s:g} s"
    if isinstance(exc, SlackClientError):
        return f"cannot send to {where}: {exc}"
    if isinstance(reason, OSError) and reason.strerror:
        return f"cannot reach {where}: {reason.strerror}"
    return f"cannot reach {where}: {str(reason) or type(reason).__name__}"


class Pacer:
    """At most one message per ``interval_s`` to each channel: before sending, sleeps
    out what is left since the last message to that channel ended."""

    def __init__(self, interval_s: float, clock: Clock, sleep: Sleep) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._last: dict[str, float] = {}

    def wait(self, channel: str) -> None:
        last = self._last.get(channel)
        if last is None or self.interval_s <= 0:
            return
        remaining = last + self.interval_s - self._clock()
        if remaining > 0:
            self._sleep(remaining)

    def mark(self, channel: str) -> None:
        self._last[channel] = self._clock()
