"""The ``Notifier`` contract, run against every implementation: Slack's Web API and an
incoming webhook (the real slack_sdk against the Slack server on loopback), the console
and recording.

The alert lifecycle relies on these and on nothing else of a notifier: a post says
whether it arrived and names the message when the service can change it later; a
delivery never raises; ``updates_in_place`` and ``can_attach`` say truly what the
service does. Each case reads back what the service received in its own terms (the
server's requests, the console's lines, the recorded deliveries), so that a flag that
lies is caught where the lie shows.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.base import Delivery, DeliveryResult, Notifier
from gpuwatch.notify.console import ConsoleNotifier, RecordingNotifier
from gpuwatch.notify.slack import SlackNotifier, WebhookNotifier
from tests.integration.slack_server import (
    TOKEN,
    WEBHOOK,
    SlackServer,
    slack_server_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration

CHANNEL = "#gpu-alerts"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*3 idle GPUs* in gpu-training"}}
HTML = b"<!doctype html><title>GPU report</title>" + b"x" * 2000
KNOWN_STATUSES = {"sent", "printed", "composed"}
"""What ``Notification.status`` says of a delivered message (``failed`` is the other)."""
ALL = ("slack", "webhook", "console", "recording")
SERVED = ("slack", "webhook")
"""The implementations with a service on the other side, which can answer a failure."""

Attached = tuple[str, int]
"""A file as the service holds it in a message's thread: (filename, size in bytes)."""


@dataclass
class Case:
    notifier: Notifier
    received: Callable[[], list[str]]
    """The kinds of the deliveries the service received, as it saw them (``post``,
    ``update``, ``reply``), oldest first."""
    attached: Callable[[DeliveryResult], list[Attached]]
    """The files the service holds in the thread of a posted message."""
    server: SlackServer | None = None
    refuse_next: Callable[[], None] = lambda: None
    """Script the service to refuse the next request as it refuses an unknown channel."""


def slack_case(server: SlackServer) -> Case:
    def received() -> list[str]:
        kinds = {"chat.postMessage": "post", "chat.update": "update"}
        return [
            "reply" if call.params.get("thread_ts") else kinds[call.method]
            for call in server.calls
            if call.method in kinds
        ]

    def attached(posted: DeliveryResult) -> list[Attached]:
        files = [
            server.files[file_id]
            for reply in server.replies(CHANNEL, posted.ts or "")
            for file_id in reply.files
        ]
        return [(file.filename, len(file.content or b"")) for file in files]

    return Case(
        SlackNotifier(TOKEN, fast_settings(server)),
        received,
        attached,
        server,
        lambda: server.fail_next(200, error="channel_not_found"),
    )


def webhook_case(server: SlackServer) -> Case:
    return Case(
        WebhookNotifier(server.webhook_url, fast_settings(server)),
        # The webhook's requests carry no kind: whatever it was asked, Slack saw a post.
        lambda: ["post" for _ in server.calls_to(WEBHOOK)],
        lambda posted: [],  # the server has no way to take a file through the webhook
        server,
        lambda: server.fail_next(404, error="channel_not_found", method=WEBHOOK),
    )


_CONSOLE_LINE = re.compile(
    r"^--- would (?:(?P<verb>post to|update a message in|reply in a thread in) Slack"
    r"|attach (?P<file>\S+) \((?P<size>[\d,]+) bytes\) in the thread of message (?P<ts>\S+))"
)
_CONSOLE_VERBS = {
    "post to": "post",
    "update a message in": "update",
    "reply in a thread in": "reply",
}


def console_case() -> Case:
    stream = io.StringIO()

    def lines() -> list[re.Match[str]]:
        return [m for line in stream.getvalue().splitlines() if (m := _CONSOLE_LINE.match(line))]

    return Case(
        ConsoleNotifier(stream),
        lambda: [_CONSOLE_VERBS[m["verb"]] for m in lines() if m["verb"]],
        lambda posted: [
            (m["file"], int(m["size"].replace(",", "")))
            for m in lines()
            if m["file"] and m["ts"] == posted.ts
        ],
    )


def recording_case() -> Case:
    notifier = RecordingNotifier()
    return Case(
        notifier,
        lambda: [d.kind for d in notifier.delivered],
        lambda posted: [
            (a.filename, len(a.content)) for a in notifier.attached if a.posted.ts == posted.ts
        ],
    )


def fast_settings(server: SlackServer) -> SlackSettings:
    """No pacing, no retries: a failure answer is the result at once."""
    return SlackSettings(
        base_url=server.base_url,
        min_interval_s=0,
        timeout_s=5,
        connection_retries=0,
        server_error_retries=0,
    )


def build(kind: str, request: pytest.FixtureRequest) -> Case:
    if kind == "console":
        return console_case()
    if kind == "recording":
        return recording_case()
    server: SlackServer = request.getfixturevalue("slack_server")
    return slack_case(server) if kind == "slack" else webhook_case(server)


@pytest.fixture(params=ALL)
def case(request: pytest.FixtureRequest) -> Case:
    return build(request.param, request)


@pytest.fixture(params=SERVED)
def served(request: pytest.FixtureRequest) -> Case:
    return build(request.param, request)


def post(notifier: Notifier) -> DeliveryResult:
    return notifier.send(Delivery("post", CHANNEL, "3 idle GPUs in gpu-training", (SECTION,)))


# --- delivering --------------------------------------------------------------------------------


def test_a_post_arrives_and_names_its_message_when_the_service_can_change_it(case: Case) -> None:
    posted = post(case.notifier)

    assert posted.ok and posted.error is None
    assert case.received() == ["post"]
    # A message is named whole (its id and channel) or not at all...
    assert bool(posted.ts) == bool(posted.channel)
    # ...and a service that changes messages must name them, or nothing could be changed.
    if case.notifier.updates_in_place:
        assert posted.ts and posted.channel


def test_updates_and_replies_of_a_posted_message_honour_updates_in_place(case: Case) -> None:
    notifier = case.notifier
    posted = post(notifier)
    where = posted.channel or CHANNEL

    updated = notifier.send(Delivery("update", where, "2 idle GPUs in gpu-training", ts=posted.ts))
    replied = notifier.send(Delivery("reply", where, "Resolved", ts=posted.ts))

    assert updated.ok and replied.ok
    if notifier.updates_in_place:
        assert case.received() == ["post", "update", "reply"]
        assert updated.ts == posted.ts  # the same message, changed
        assert replied.ts and replied.ts != posted.ts
    else:
        assert case.received() == ["post", "post", "post"]


def test_the_delivered_status_and_name_are_what_results_record(case: Case) -> None:
    assert case.notifier.delivered_status in KNOWN_STATUSES
    assert isinstance(case.notifier.name, str) and case.notifier.name


# --- attaching ---------------------------------------------------------------------------------


def test_attach_does_what_can_attach_says(case: Case) -> None:
    notifier = case.notifier
    posted = post(notifier)

    attached = notifier.attach(posted, "gpuwatch-prod-2026-W48.html", HTML, "GPU report")

    assert attached.ok is notifier.can_attach
    if notifier.can_attach:
        assert attached.error is None
        assert case.attached(posted) == [("gpuwatch-prod-2026-W48.html", len(HTML))]
    else:
        assert attached.error and "attach" in attached.error
        assert case.attached(posted) == []


def test_attaching_to_a_message_that_was_not_posted_fails_without_raising(case: Case) -> None:
    failed_post = DeliveryResult(ok=False, error="HTTP 500")

    attached = case.notifier.attach(failed_post, "report.html", HTML, "GPU report")

    assert not attached.ok and attached.error
    assert case.received() == []


# --- failures come back as results -------------------------------------------------------------


def test_a_server_error_is_a_result_to_retry(served: Case) -> None:
    assert served.server is not None
    posted = post(served.notifier)
    served.server.fail_next(500, times=10)

    failed = post(served.notifier)
    attached = served.notifier.attach(posted, "report.html", HTML, "GPU report")

    assert not failed.ok and "500" in (failed.error or "")
    assert not failed.permanent  # the next cycle tries again
    assert not attached.ok and attached.error


def test_a_refusal_is_a_permanent_result_naming_the_cause(served: Case) -> None:
    served.refuse_next()

    refused = post(served.notifier)

    assert not refused.ok and refused.permanent
    assert "channel_not_found" in (refused.error or "")


def test_an_unreachable_service_is_a_result(served: Case) -> None:
    assert served.server is not None
    served.server.stop()

    result = post(served.notifier)

    assert not result.ok and result.error
