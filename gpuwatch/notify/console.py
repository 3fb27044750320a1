"""Print messages instead of sending them: what a dry run with no Slack shows."""

from __future__ import annotations

from dataclasses import replace
from typing import TextIO

from gpuwatch.model.result import Notification


class ConsoleNotifier:
    name = "console"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def deliver(self, message: Notification) -> Notification:
        self.stream.write(f"--- would send to Slack {message.channel} ---\n{message.text}\n\n")
        return replace(message, status="printed")


class RecordingNotifier:
    """Keeps what it was given; delivers nothing. For tests and for notify: off."""

    name = "recording"

    def __init__(self) -> None:
        self.delivered: list[Notification] = []

    def deliver(self, message: Notification) -> Notification:
        self.delivered.append(message)
        return replace(message, status="composed")
