"""The weekly report's summary goes out through the run's notifier, as its capabilities
allow: to a chat only (the command prints the summary itself), with the HTML attached
where the notifier can attach files."""

from __future__ import annotations

import io

import pytest

from gpuwatch.config.settings import Settings, SlackSettings
from gpuwatch.notify.console import ConsoleNotifier, RecordingNotifier
from gpuwatch.notify.slack import SlackNotifier, WebhookNotifier
from gpuwatch.wiring import publish_report
from tests.integration.slack_server import (
    TOKEN,
    SlackServer,
    slack_server_fixture,  # noqa: F401
)
from tests.report_tables import report_data

pytestmark = pytest.mark.integration

SETTINGS = Settings()
SUMMARY = "GPU report prod-a 2026-W48: 412.00 USD wasted"
HTML = "<!doctype html><title>GPU report</title>"
FILENAME = "gpuwatch-prod-a-2026-W48.html"


def slack_settings(server: SlackServer) -> SlackSettings:
    return SlackSettings(
        base_url=server.base_url, min_interval_s=0, connection_retries=0, server_error_retries=0
    )


def test_slack_gets_the_summary_with_the_html_in_its_thread(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, slack_settings(slack_server))

    said = publish_report(SETTINGS, SUMMARY, HTML, report_data(), notifier)

    assert said == [f"report summary and {FILENAME} posted to Slack #gpu-alerts"]
    (message,) = slack_server.messages("#gpu-alerts")
    assert message.text == SUMMARY
    (reply,) = slack_server.replies("#gpu-alerts", message.ts)
    (file_id,) = reply.files
    assert slack_server.files[file_id].filename == FILENAME
    assert slack_server.files[file_id].content == HTML.encode()


def test_a_webhook_gets_the_summary_alone(slack_server: SlackServer) -> None:
    notifier = WebhookNotifier(slack_server.webhook_url, slack_settings(slack_server))

    said = publish_report(SETTINGS, SUMMARY, HTML, report_data(), notifier)

    assert said == ["report summary posted to Slack (webhook; it cannot attach the HTML)"]
    assert [m["text"] for m in slack_server.webhook_messages] == [SUMMARY]
    assert slack_server.files == {}


def test_a_failed_post_is_said_and_not_raised(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, slack_settings(slack_server))
    slack_server.fail_next(500, times=10)

    said = publish_report(SETTINGS, SUMMARY, HTML, report_data(), notifier)

    assert len(said) == 1 and said[0].startswith("report summary not posted to Slack")
    assert slack_server.files == {}


def test_the_console_and_recording_get_nothing_the_command_prints_it_already() -> None:
    stream = io.StringIO()
    recording = RecordingNotifier()

    for notifier in (ConsoleNotifier(stream), recording):
        assert publish_report(SETTINGS, SUMMARY, HTML, report_data(), notifier) == []

    assert stream.getvalue() == ""
    assert recording.delivered == [] and recording.attached == []
