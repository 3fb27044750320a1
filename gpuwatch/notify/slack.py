"""Slack delivery: the one module that talks to Slack, through slack_sdk.

Two notifiers carry deliveries to Slack, one message at a time:

- ``SlackNotifier`` uses the Web API with a bot token: it posts, updates a message in
  place (``chat.update``) and replies in its thread (``chat.postMessage`` with
  ``thread_ts``).
- ``WebhookNotifier`` uses an incoming webhook: it can only post, so every delivery
  becomes a new message in the webhook's own channel.

Both keep a cycle moving whatever Slack does. Neither raises for a failed delivery: the
failure comes back as a ``DeliveryResult`` whose error names the cause (the Slack error
code, the HTTP status, the connection problem) and says whether trying again can help.
A 429 is waited out for its ``Retry-After`` only up to ``max_retry_after_s``; a longer
one leaves the message for the next cycle. A 5xx answer or a lost connection is retried
with backoff; each kind of retry has its own budget (``slack_http``). Messages to one
channel are paced at ``min_interval_s``, so that Slack has no reason to answer 429 in
the first place. Once Slack refuses the token (or the webhook), every later delivery
of the same notifier fails at once without asking Slack again; once it refuses a
channel, the same holds for that channel. A notifier is built per cycle, so the next
cycle asks once more.

The token and the webhook URL are secrets: they appear in no result, error, repr or log
record. Each is registered with ``gpuwatch.util.redact`` when a notifier is built, the
errors built here are redacted, and slack_sdk's loggers carry the redacting filter.
"""

from __future__ import annotations

import logging
import re
import time
from http.client import HTTPException
from typing import Any, Final

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse, WebClient
from slack_sdk.webhook import WebhookClient

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.base import Delivery, DeliveryResult
from gpuwatch.notify.slack_http import (
    Clock,
    Pacer,
    Sleep,
    rate_limited,
    retry_handlers,
    server_error_note,
    transport_error,
)
from gpuwatch.util.redact import redact, register_secret, register_webhook
from gpuwatch.util.redact_output import redact_logger

log = logging.getLogger(__name__)

AUTH_ERRORS: Final = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
"""Slack refuses the token: nothing sent with it can succeed until it is replaced."""
CHANNEL_ERRORS: Final = frozenset({"channel_not_found", "not_in_channel", "is_archived"})
"""Slack refuses the channel: nothing sent to it can succeed until someone acts."""
PERMANENT_ERRORS: Final = (
    AUTH_ERRORS
    | CHANNEL_ERRORS
    | {
        "missing_scope",
        "restricted_action",
        # The message itself is refused: sending it again cannot help.
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
    }
)
"""Error codes for which trying again without a change of configuration cannot help."""

WEBHOOK_REFUSALS: Final = frozenset(
    {
        "invalid_token",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
    }
)
"""Incoming-webhook answers that refuse the webhook itself (its only channel included)."""
WEBHOOK_PERMANENT_ERRORS: Final = WEBHOOK_REFUSALS | {
    "invalid_payload",
    "no_text",
    "too_many_attachments",
}

_SLACK_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_WEBHOOK_CHANNEL = "webhook"
"""The pacing key of a webhook's one channel."""


class SlackNotifier:
    """Delivers through the Slack Web API with a bot token (``chat:write`` scope).

    ``clock`` and ``sleep`` pace the messages to one channel and wait out a 429's
    ``Retry-After``. One notifier serves one thread at a time.
    """

    name = "slack"
    updates_in_place = True
    delivered_status = "sent"
    can_attach = True
    posts_to_chat = True

    def __init__(
        self,
        token: str,
        settings: SlackSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._base_url = settings.base_url
        self._timeout_s = settings.timeout_s
        self._max_retry_after_s = settings.max_retry_after_s
        self._server_error_retries = settings.server_error_retries
        self._pacer = Pacer(settings.min_interval_s, clock, sleep)
        register_secret(token)
        self._client = WebClient(
            token=token,
            base_url=settings.base_url,
            **client_options("slack_sdk.web.base_client", settings, sleep),
        )
        self._refused: DeliveryResult | None = None
        """Slack refused the token: every later delivery fails with this at once."""
        self._refused_channels: dict[str, DeliveryResult] = {}
        self._channel_ids: dict[str, str] = {}
        """Channel as a delivery names it (``#gpu-alerts``) -> the id Slack answered
        with: pacing and refusals then hold for a channel however it is named."""

    def __repr__(self) -> str:
        return f"SlackNotifier(base_url={redact(self._base_url)!r})"

    def send(self, delivery: Delivery) -> DeliveryResult:
        refused = self._refused or self._refused_channels.get(self._channel(delivery.channel))
        if refused is not None:
            return refused
        if delivery.kind != "post" and not delivery.ts:
            return DeliveryResult(
                ok=False, error=f"a Slack {delivery.kind} needs the message's ts", permanent=True
            )
        self._pacer.wait(self._channel(delivery.channel))
        result, code = self._call(delivery)
        if result.ok and result.channel:
            self._channel_ids[delivery.channel] = result.channel
        self._pacer.mark(self._channel(delivery.channel))
        if not result.ok:
            log.warning("Slack %s to %s failed: %s", delivery.kind, delivery.channel, result.error)
            if code in AUTH_ERRORS:
                self._refused = result
            elif code in CHANNEL_ERRORS:
                self._refused_channels[self._channel(delivery.channel)] = result
        return result

    def _channel(self, named: str) -> str:
        return self._channel_ids.get(named, named)

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        """Attach a file (the weekly report's HTML) in the thread of a message this
        notifier posted (``files.getUploadURLExternal`` + ``completeUploadExternal``,
        which want the channel id the post answered with). Needs ``files:write``."""
        if not posted.ok or not posted.ts or not posted.channel:
            return DeliveryResult(ok=False, error="no posted message to attach the file to")
        refused = self._refused or self._refused_channels.get(posted.channel)
        if refused is not None:
            return refused
        self._pacer.wait(posted.channel)
        try:
            self._client.files_upload_v2(
                channel=posted.channel,
                thread_ts=posted.ts,
                filename=filename,
                content=content,
                title=title,
            )
        except SlackApiError as exc:
            result, code = self._refusal("files.completeUploadExternal", exc.response)
            if code in AUTH_ERRORS:
                self._refused = result
            return result
        except (SlackClientError, OSError, HTTPException, ValueError) as exc:
            error = transport_error(exc, f"Slack at {self._base_url}", self._timeout_s)
            return DeliveryResult(ok=False, error=redact(error))
        finally:
            self._pacer.mark(posted.channel)
        return DeliveryResult(ok=True, ts=posted.ts, channel=posted.channel)

    def _call(self, delivery: Delivery) -> tuple[DeliveryResult, str | None]:
        """The outcome, and the Slack error code when Slack refused."""
        method = "chat.update" if delivery.kind == "update" else "chat.postMessage"
        try:
            if delivery.kind == "update":
                response = self._client.chat_update(
                    channel=delivery.channel,
                    ts=str(delivery.ts),
                    text=delivery.text,
                    # Without blocks, an update keeps the message's old ones: [] clears them.
                    blocks=list(delivery.blocks),
                )
            else:
                response = self._client.chat_postMessage(
                    channel=delivery.channel,
                    text=delivery.text,
                    blocks=list(delivery.blocks) or None,
                    thread_ts=delivery.ts if delivery.kind == "reply" else None,
                )
        except SlackApiError as exc:
            return self._refusal(method, exc.response)
        except (SlackClientError, OSError, HTTPException, ValueError) as exc:
            error = transport_error(exc, f"Slack at {self._base_url}", self._timeout_s)
            return DeliveryResult(ok=False, error=redact(error)), None
        ts, channel = response.get("ts"), response.get("channel")
        if not isinstance(ts, str) or not isinstance(channel, str):
            error = f"Slack {method} answered ok without a ts and channel"
            return DeliveryResult(ok=False, error=error), None
        return DeliveryResult(ok=True, ts=ts, channel=channel), None

    def _refusal(self, method: str, response: SlackResponse) -> tuple[DeliveryResult, str | None]:
        if response.status_code == 429:
            return rate_limited(response.headers, self._max_retry_after_s), None
        data = response.data if isinstance(response.data, dict) else {}
        code = data.get("error")
        # A body that is not JSON reaches here as slack_sdk's own sentence, not a code.
        code = code if isinstance(code, str) and _SLACK_ERROR_CODE.fullmatch(code) else None
        detail = code or "no error code"
        if code == "missing_scope" and isinstance(data.get("needed"), str):
            detail += f" (needs {data['needed']})"
        note = server_error_note(
            response.status_code,
            response.headers,
            self._server_error_retries,
            self._max_retry_after_s,
        )
        status = f"HTTP {response.status_code}" + (f", {note}" if note else "")
        error = redact(f"Slack {method}: {detail} ({status})")
        return DeliveryResult(ok=False, error=error, permanent=code in PERMANENT_ERRORS), code


class WebhookNotifier:
    """Delivers through an incoming webhook: posts only, to the webhook's own channel.

    The URL is a secret: errors and logs call it "the webhook".
    """

    name = "slack-webhook"
    updates_in_place = False
    delivered_status = "sent"
    can_attach = False
    posts_to_chat = True

    def __init__(
        self,
        url: str,
        settings: SlackSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._timeout_s = settings.timeout_s
        self._max_retry_after_s = settings.max_retry_after_s
        self._server_error_retries = settings.server_error_retries
        self._pacer = Pacer(settings.min_interval_s, clock, sleep)
        register_webhook(url)
        self._client = WebhookClient(
            url, **client_options("slack_sdk.webhook.client", settings, sleep)
        )
        self._refused: DeliveryResult | None = None
        """Slack refused the webhook: every later delivery fails with this at once."""

    def __repr__(self) -> str:
        return "WebhookNotifier(<the webhook>)"

    def send(self, delivery: Delivery) -> DeliveryResult:
        if self._refused is not None:
            return self._refused
        self._pacer.wait(_WEBHOOK_CHANNEL)
        result, code = self._call(delivery)
        self._pacer.mark(_WEBHOOK_CHANNEL)
        if not result.ok:
            log.warning("Slack webhook %s failed: %s", delivery.kind, result.error)
            if code in WEBHOOK_REFUSALS:
                self._refused = result
        return result

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        """An incoming webhook posts text only: nothing is sent, the answer says so."""
        return DeliveryResult(
            ok=False, error=f"a webhook cannot attach files ({filename} not sent)", permanent=True
        )

    def _call(self, delivery: Delivery) -> tuple[DeliveryResult, str | None]:
        """The outcome, and the Slack error code when Slack refused."""
        try:
            response = self._client.send(text=delivery.text, blocks=list(delivery.blocks) or None)
        except (SlackClientError, OSError, HTTPException, ValueError) as exc:
            error = transport_error(exc, "the webhook", self._timeout_s)
            return DeliveryResult(ok=False, error=redact(error)), None
        if response.status_code == 200:
            return DeliveryResult(ok=True), None
        if response.status_code == 429:
            return rate_limited(response.headers, self._max_retry_after_s), None
        body = (response.body or "").strip()
        code = body if _SLACK_ERROR_CODE.fullmatch(body) else None
        detail = code or (repr(body[:200]) if body else "an empty body")
        note = server_error_note(
            response.status_code,
            response.headers,
            self._server_error_retries,
            self._max_retry_after_s,
        )
        detail += f" ({note})" if note else ""
        error = redact(f"the webhook answered HTTP {response.status_code}: {detail}")
        return DeliveryResult(
            ok=False, error=error, permanent=code in WEBHOOK_PERMANENT_ERRORS
        ), code


def client_options(logger_name: str, settings: SlackSettings, sleep: Sleep) -> dict[str, Any]:
    """What both slack_sdk clients are built with: the timeout, the retry handlers, and
    their logger, which redacts: slack_sdk redacts the Authorization header in its debug
    log, but its webhook client logs the URL (debug: every request; info: every retry),
    and an error's text can quote what it was sent."""
    logger = logging.getLogger(logger_name)
    redact_logger(logger)
    return {
        "timeout": settings.timeout_s,  # urllib takes float seconds
        "logger": logger,
        "retry_handlers": retry_handlers(settings, sleep),
    }
