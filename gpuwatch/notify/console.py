"""Print messages instead of sending them (what a dry run with no Slack shows), or only
record them (tests, and ``notify.console: false`` without Slack).

Both behave like a chat service that updates in place, so the alert lifecycle is the
same with or without Slack: a console shows exactly what a channel would read.
"""

from __future__ import annotations

import uuid
from typing import TextIO

from gpuwatch.notify.base import Delivery, DeliveryResult

_VERB = {"post": "post to", "update": "update a message in", "reply": "reply in a thread in"}


def _message_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class ConsoleNotifier:
    name = "console"
    updates_in_place = True
    delivered_status = "printed"

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


class RecordingNotifier:
    """Keeps what it was given; delivers nothing."""

    name = "recording"
    updates_in_place = True
    delivered_status = "composed"

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []

    def send(self, delivery: Delivery) -> DeliveryResult:
        self.delivered.append(delivery)
        ts = delivery.ts if delivery.kind == "update" else _message_id("recorded")
        return DeliveryResult(ok=True, ts=ts, channel=delivery.channel)
