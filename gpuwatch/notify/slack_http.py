"""How the Slack notifiers treat Slack's HTTP: retries, rate limits, pacing, failures.

slack_sdk retries only what its retry handlers say. gpuwatch adds them for 429 (capped:
a ``Retry-After`` longer than ``max_retry_after_s`` leaves the message for the next
cycle rather than stalling this one), connection errors and 5xx answers (500, 502, 503,
504), each kind with its own budget. slack_sdk gives its handlers one attempt counter
for a request, so with its own handlers two 429s waited out would spend the 5xx
budget too; these count their own retries instead. Messages to one channel are paced
so that Slack has no reason to answer 429 in the first place. ``Retry-After`` and the
backoff are read the way every gpuwatch client reads them (``gpuwatch.util.http_retry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.client import RemoteDisconnected
from typing import Any, Final
from urllib.error import HTTPError, URLError

from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.base import DeliveryResult
from gpuwatch.util.http_retry import backoff_s
from gpuwatch.util.http_retry import retry_after_s as read_retry_after

Clock = Callable[[], float]
Sleep = Callable[[float], None]
_DEFAULT_RETRY_AFTER_S = 1.0
"""What slack_sdk waits when a 429 carries no Retry-After (Slack always sends one)."""
SERVER_ERRORS: Final = frozenset({500, 502, 503, 504})
"""Answers of a Slack (or a proxy before it) that is restarting or overloaded: worth
asking again. 501 and 505 will not get better."""
_BACKOFF_INITIAL_S = 1.0
"""The first retry after a 5xx or a connection error waits 0.5 to 1 s, the next 1 to 2 s."""


def retry_handlers(settings: SlackSettings, sleep: Sleep = time.sleep) -> list[RetryHandler]:
    """slack_sdk's retry handlers as the settings ask: 429s waited out up to
    ``max_retry_after_s``, connection errors and 5xx answers retried with backoff, each
    kind within its own budget."""
    cap_s = settings.max_retry_after_s
    return [
        RateLimitRetry(settings.rate_limit_retries, cap_s, sleep),
        ConnectionErrorRetry(settings.connection_retries, cap_s, sleep),
        ServerErrorRetry(settings.server_error_retries, cap_s, sleep),
    ]


class BudgetedRetry(RetryHandler):
    """A retry handler that counts its own retries of a request.

    slack_sdk checks every handler's ``max_retry_count`` against one counter that all
    of them advance (``RetryState.current_attempt``): after two 429s waited out, a
    server-error handler allowing two retries allows none. This one keeps its count in
    the request's ``RetryState.custom_values`` under its own key, waits with the
    injected ``sleep`` (so that a test need not wait), and still advances the shared
    counter, which slack_sdk's logs read.
    """

    def __init__(self, max_retry_count: int, max_retry_after_s: float, sleep: Sleep) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._key = f"gpuwatch.{type(self).__name__}.retries"

    def retries(self, state: RetryState) -> int:
        """How many times this handler has retried the request so far."""
        return int((state.custom_values or {}).get(self._key, 0))

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if self.retries(state) >= self.max_retry_count:
            return False
        return self._can_retry(state=state, request=request, response=response, error=error)

    def wait_s(self, state: RetryState, response: HttpResponse | None) -> float:
        """How long to wait before the next attempt: the answer's ``Retry-After``, else
        exponential backoff with jitter over this handler's own retries."""
        after = retry_after_s(response.headers) if response is not None else None
        if after is not None:
            return after  # at most max_retry_after_s: _can_retry said so
        now = datetime.now(UTC)
        return backoff_s(self.retries(state), None, now, _BACKOFF_INITIAL_S, self.max_retry_after_s)

    def prepare_for_next_attempt(
        self, *, state: RetryState, response: HttpResponse | None = None, **_: Any
    ) -> None:
        """Wait, then count the retry against this handler's budget only."""
        state.next_attempt_requested = True
        self._sleep(self.wait_s(state, response))
        state.custom_values = {**(state.custom_values or {}), self._key: self.retries(state) + 1}
        state.increment_current_attempt()

    def _waitable(self, response: HttpResponse) -> bool:
        """No ``Retry-After``, or one short enough to wait out within a cycle."""
        wait_s = retry_after_s(response.headers)
        return wait_s is None or wait_s <= self.max_retry_after_s


class RateLimitRetry(BudgetedRetry):
    """Waits out a 429 for exactly its ``Retry-After``, unless that is longer than
    ``max_retry_after_s``: then it gives up at once and the 429 is the answer.

    slack_sdk's own handler waits whatever Slack asks (plus up to a second of jitter),
    which can stall a cycle for minutes, and fails on a fractional ``Retry-After``.
    """

    def _can_retry(self, *, response: HttpResponse | None = None, **_: Any) -> bool:
        return response is not None and response.status_code == 429 and self._waitable(response)

    def wait_s(self, state: RetryState, response: HttpResponse | None) -> float:
        """The ``Retry-After``, exactly: Slack counts from when it answered."""
        wait_s = retry_after_s(response.headers) if response is not None else None
        return _DEFAULT_RETRY_AFTER_S if wait_s is None else wait_s


class ServerErrorRetry(BudgetedRetry):
    """Retries a 500, 502, 503 or 504 after a backoff, or after its ``Retry-After`` when
    it gives one that is short enough to wait out within a cycle."""

    def _can_retry(self, *, response: HttpResponse | None = None, **_: Any) -> bool:
        return (
            response is not None
            and response.status_code in SERVER_ERRORS
            and self._waitable(response)
        )


class ConnectionErrorRetry(BudgetedRetry):
    """Retries a request that got no answer: a refused, reset or dropped connection. A
    request whose answer was too slow to come is not sent again: it may have been acted
    on, and the cycle would wait out the timeout twice."""

    def _can_retry(
        self, *, response: HttpResponse | None = None, error: Exception | None = None, **_: Any
    ) -> bool:
        if isinstance(error, HTTPError) or response is not None:
            return False  # an answer, not a lost connection
        return isinstance(error, URLError | ConnectionResetError | RemoteDisconnected)


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


def server_error_note(
    status: int, headers: Mapping[str, Any], retries: int, max_retry_after_s: float
) -> str:
    """Why a 5xx answer is the outcome of this cycle's attempt (empty for any other
    status), so that a failed delivery says whether asking sooner could have helped."""
    if status not in SERVER_ERRORS:
        return ""
    wait_s = retry_after_s(headers)
    if wait_s is not None and wait_s > max_retry_after_s:
        return (
            f"Retry-After {wait_s:g} s, more than the {max_retry_after_s:g} s waited out "
            "within a cycle"
        )
    if retries == 0:
        return "not retried: notify.slack.server_error_retries is 0"
    return f"still failing after {retries} {'retry' if retries == 1 else 'retries'}"


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
