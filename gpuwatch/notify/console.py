"""Print messages instead of sending them (what a dry run with no Slack shows), or only
record them (tests, and ``notify.console: false`` without Slack).

Both behave like a chat service that updates in place and takes attachments, so the
alert lifecycle is the same with or without Slack: a console shows exactly what a
channel would read. Neither posts to a chat (``posts_to_chat``): what is meant only for
one is not shown here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TextIO

from gpuwatch.notify.base import Delivery, DeliveryResult

_VERB = {"post": "post to", "update": "update a message in", "reply": "reply in a thread in"}
_NOT_POSTED = DeliveryResult(ok=False, error="no posted message to attach the file to")


def _message_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _posted(result: DeliveryResult) -> bool:
    """``result`` names a delivered message that a file can be attached to."""
    return result.ok and bool(result.ts) and bool(result.channel)


@dataclass(frozen=True)
class Attachment:
    """A file a local notifier was asked to attach."""

    posted: DeliveryResult
    """The message in whose thread it goes."""
    filename: str
    content: bytes
    title: str


class _LocalNotifier:
    """What the console and the recorder share: they accept every delivery, name
    posted messages as a chat service would, and take attachments of posted ones."""

    updates_in_place = True
    can_attach = True
    posts_to_chat = False
    _prefix = "local"

    def send(self, delivery: Delivery) -> DeliveryResult:
        self._deliver(delivery)
        ts = delivery.ts if delivery.kind == "update" else _message_id(self._prefix)
        return DeliveryResult(ok=True, ts=ts, channel=delivery.channel)

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        if not _posted(posted):
            return _NOT_POSTED
        self._keep(Attachment(posted, filename, content, title))
        return DeliveryResult(ok=True, ts=posted.ts, channel=posted.channel)

    def _deliver(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def _keep(self, attachment: Attachment) -> None:
        raise NotImplementedError


class ConsoleNotifier(_LocalNotifier):
    name = "console"
    delivered_status = "printed"
    _prefix = "console"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _deliver(self, delivery: Delivery) -> None:
        target = f" (message {delivery.ts})" if delivery.ts else ""
        self.stream.write(
            f"--- would {_VERB[delivery.kind]} Slack {delivery.channel}{target} ---\n"
            f"{delivery.text}\n\n"
        )

    def _keep(self, attachment: Attachment) -> None:
        posted = attachment.posted
        self.stream.write(
            f"--- would attach {attachment.filename} ({len(attachment.content):,} bytes) in "
            f"the thread of message {posted.ts} in Slack {posted.channel} ---\n\n"
        )


class RecordingNotifier(_LocalNotifier):
    """Keeps what it was given; delivers nothing."""

    name = "recording"
    delivered_status = "composed"
    _prefix = "recorded"

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []
        self.attached: list[Attachment] = []

    def _deliver(self, delivery: Delivery) -> None:
        self.delivered.append(delivery)

    def _keep(self, attachment: Attachment) -> None:
        self.attached.append(attachment)
