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


class ConsoleNotifier:
    name = "console"
    updates_in_place = True
    delivered_status = "printed"
    can_attach = True
    posts_to_chat = False

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, delivery: Delivery) -> DeliveryResult:
        target = f" (message {delivery.ts})" if delivery.ts else ""
        self.stream.write(
            f"--- would {_VERB[delivery.kind]} Slack {delivery.channel}{target} ---\n"
            f"{delivery.text}\n\n"
        )
        ts = delivery.ts if delivery.kind == "update" else _message_id("console")
        return DeliveryResult(ok=True, ts=ts, channel=delivery.channel)

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        if not _posted(posted):
            return _NOT_POSTED
        self.stream.write(
            f"--- would attach {filename} ({len(content):,} bytes) in the thread of "
            f"message {posted.ts} in Slack {posted.channel} ---\n\n"
        )
        return DeliveryResult(ok=True, ts=posted.ts, channel=posted.channel)


@dataclass(frozen=True)
class Attachment:
    """A file a ``RecordingNotifier`` was asked to attach."""

    posted: DeliveryResult
    """The message in whose thread it goes."""
    filename: str
    content: bytes
    title: str


class RecordingNotifier:
    """Keeps what it was given; delivers nothing."""

    name = "recording"
    updates_in_place = True
    delivered_status = "composed"
    can_attach = True
    posts_to_chat = False

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []
        self.attached: list[Attachment] = []

    def send(self, delivery: Delivery) -> DeliveryResult:
        self.delivered.append(delivery)
        ts = delivery.ts if delivery.kind == "update" else _message_id("recorded")
        return DeliveryResult(ok=True, ts=ts, channel=delivery.channel)

    def attach(
        self, posted: DeliveryResult, filename: str, content: bytes, title: str
    ) -> DeliveryResult:
        if not _posted(posted):
            return _NOT_POSTED
        self.attached.append(Attachment(posted, filename, content, title))
        return DeliveryResult(ok=True, ts=posted.ts, channel=posted.channel)
