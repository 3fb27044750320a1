"""The Slack notifiers with the real slack_sdk, against the Slack Web API on loopback."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from gpuwatch.config.settings import SlackSettings
from gpuwatch.notify.base import Delivery, DeliveryResult
from gpuwatch.notify.slack import SlackNotifier, WebhookNotifier
from tests.integration.slack_server import (
    TOKEN,
    WEBHOOK,
    WEBHOOK_PATH,
    SlackServer,
    slack_server_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*3 idle GPUs* in gpu-training"}}
CONTEXT = {"type": "context", "elements": [{"type": "mrkdwn", "text": "resolved"}]}


def settings_for(server: SlackServer, **changes: float) -> SlackSettings:
    """Fast settings: no pacing unless asked, short timeouts."""
    values: dict[str, float] = {"min_interval_s": 0.0, "timeout_s": 5.0, **changes}
    return SlackSettings(base_url=server.base_url, **values)  # type: ignore[arg-type]


def post(channel: str = "#gpu-alerts", text: str = "3 idle GPUs") -> Delivery:
    return Delivery("post", channel, text)


class Sleeps(list[float]):
    """An injected sleep that records what it was asked to wait, and waits it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def stopped_url() -> Iterator[str]:
    """A loopback address where nothing listens any more."""
    with SlackServer() as server:
        url = server.url
    yield url


# --- the round trip ---------------------------------------------------------------------------


def test_post_update_and_reply_round_trip(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server))

    posted = notifier.send(Delivery("post", "#gpu-alerts", "3 idle GPUs", (SECTION,)))
    channel = slack_server.channel_id("#gpu-alerts")
    assert posted.ok and posted.channel == channel and posted.ts
    updated = notifier.send(Delivery("update", channel, "2 idle GPUs", (CONTEXT,), posted.ts))
    replied = notifier.send(Delivery("reply", channel, "resolved", ts=posted.ts))

    assert updated == DeliveryResult(ok=True, ts=posted.ts, channel=channel)
    assert replied.ok and replied.channel == channel
    assert float(replied.ts or 0) > float(posted.ts)
    [message] = slack_server.messages("#gpu-alerts")
    assert (message.ts, message.text, message.blocks, message.edits) == (
        posted.ts,
        "2 idle GPUs",
        [CONTEXT],
        1,
    )
    [reply] = slack_server.replies(channel, posted.ts)
    assert (reply.ts, reply.text, reply.thread_ts) == (replied.ts, "resolved", posted.ts)
    [first_post, _] = slack_server.calls_to("chat.postMessage")
    assert first_post.params["blocks"] == [SECTION]
    assert first_post.headers["authorization"] == f"Bearer {TOKEN}"


def test_an_update_without_blocks_clears_the_old_ones(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server))
    posted = notifier.send(Delivery("post", "#gpu-alerts", "3 idle GPUs", (SECTION,)))

    assert notifier.send(Delivery("update", str(posted.channel), "plain now", ts=posted.ts)).ok

    [message] = slack_server.messages("#gpu-alerts")
    assert (message.text, message.blocks) == ("plain now", [])


# --- rate limits ------------------------------------------------------------------------------


def test_a_429_is_waited_out_for_its_retry_after(slack_server: SlackServer) -> None:
    sleeps = Sleeps()
    notifier = SlackNotifier(TOKEN, settings_for(slack_server), sleep=sleeps)
    slack_server.rate_limit_next(1, retry_after_s=1)

    started = time.monotonic()
    result = notifier.send(post())

    assert result.ok
    assert time.monotonic() - started >= 1.0
    assert sleeps == [1.0]
    assert len(slack_server.calls_to("chat.postMessage", status=429)) == 1
    assert len(slack_server.messages("#gpu-alerts")) == 1


def test_a_retry_after_above_the_cap_fails_fast_and_not_for_good(
    slack_server: SlackServer,
) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server, max_retry_after_s=2))
    slack_server.rate_limit_next(1, retry_after_s=30)

    started = time.monotonic()
    result = notifier.send(post())

    assert time.monotonic() - started < 1.0
    assert result == DeliveryResult(
        ok=False,
        error="rate limited by Slack (Retry-After 30 s, "
        "more than the 2 s waited out within a cycle)",
    )
    assert len(slack_server.calls) == 1
    assert notifier.send(post()).ok  # not remembered as a refusal


def test_a_rate_limit_outlasting_the_retries_fails_and_not_for_good(
    slack_server: SlackServer,
) -> None:
    sleeps: list[float] = []
    notifier = SlackNotifier(
        TOKEN, settings_for(slack_server, rate_limit_retries=2), sleep=sleeps.append
    )
    slack_server.rate_limit_next(3, retry_after_s=1)

    result = notifier.send(post())

    assert result == DeliveryResult(
        ok=False, error="rate limited by Slack (Retry-After 1 s), retries used up"
    )
    assert sleeps == [1.0, 1.0]
    assert len(slack_server.calls_to("chat.postMessage", status=429)) == 3


def test_the_server_enforces_its_per_channel_interval(slack_server: SlackServer) -> None:
    """The control for the pacing test: unpaced posts to one channel do get 429s."""
    slack_server.min_interval_s = 0.5
    notifier = SlackNotifier(TOKEN, settings_for(slack_server, rate_limit_retries=0))

    assert notifier.send(post()).ok
    refused = notifier.send(post())

    assert refused.error == "rate limited by Slack (Retry-After 1 s), retries used up"
    assert len(slack_server.calls_to("chat.postMessage", status=429)) == 1


def test_posts_to_one_channel_are_paced(slack_server: SlackServer) -> None:
    slack_server.min_interval_s = 0.2
    notifier = SlackNotifier(TOKEN, settings_for(slack_server, min_interval_s=0.2))

    started = time.monotonic()
    results = [notifier.send(post(text=f"message {i}")) for i in range(5)]

    assert all(r.ok for r in results)
    assert time.monotonic() - started >= 0.8
    assert not slack_server.calls_to(status=429)
    assert [m.text for m in slack_server.messages("#gpu-alerts")] == [
        f"message {i}" for i in range(5)
    ]


def test_a_channel_is_paced_by_name_and_by_id_alike(slack_server: SlackServer) -> None:
    # A stopped clock: every send to a channel already sent to must wait the full interval.
    sleeps: list[float] = []
    notifier = SlackNotifier(
        TOKEN,
        settings_for(slack_server, min_interval_s=0.2),
        clock=lambda: 0.0,
        sleep=sleeps.append,
    )

    posted = notifier.send(post())
    assert notifier.send(Delivery("reply", str(posted.channel), "in the thread", ts=posted.ts)).ok
    assert notifier.send(post()).ok

    assert sleeps == [0.2, 0.2]


def test_posts_to_different_channels_are_not_paced_against_each_other(
    slack_server: SlackServer,
) -> None:
    slack_server.min_interval_s = 0.2
    sleeps: list[float] = []
    notifier = SlackNotifier(
        TOKEN,
        settings_for(slack_server, min_interval_s=0.2),
        clock=lambda: 0.0,
        sleep=sleeps.append,
    )

    results = [notifier.send(post(channel)) for channel in ("#gpu-alerts", "#gpu-costs", "#ops")]

    assert all(r.ok for r in results)
    assert sleeps == []
    assert not slack_server.calls_to(status=429)


# --- server and connection errors -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_within_the_allowance_with_backoff(
    slack_server: SlackServer, status: int
) -> None:
    sleeps: list[float] = []
    settings = settings_for(slack_server, server_error_retries=2, connection_retries=0)
    notifier = SlackNotifier(TOKEN, settings, sleep=sleeps.append)
    slack_server.fail_next(status, 2, method="chat.postMessage")

    assert notifier.send(post()).ok
    assert [c.status for c in slack_server.calls] == [status, status, 200]
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # backoff with jitter
    assert len(slack_server.messages("#gpu-alerts")) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_beyond_the_allowance_fail_and_not_for_good(
    slack_server: SlackServer, status: int
) -> None:
    settings = settings_for(slack_server, server_error_retries=2)
    notifier = SlackNotifier(TOKEN, settings, sleep=lambda s: None)
    slack_server.fail_next(status, 3, method="chat.postMessage")

    result = notifier.send(post())

    assert result == DeliveryResult(
        ok=False,
        error=f"Slack chat.postMessage: internal_error (HTTP {status}, "
        "still failing after 2 retries)",
    )
    assert [c.status for c in slack_server.calls] == [status] * 3
    assert notifier.send(post()).ok


def test_a_server_error_after_rate_limits_waited_out_is_still_retried(
    slack_server: SlackServer,
) -> None:
    """Each kind of retry has its own budget: two 429s waited out leave the one 5xx
    retry allowed intact (slack_sdk's shared attempt counter would have spent it)."""
    sleeps: list[float] = []
    settings = settings_for(slack_server, rate_limit_retries=2, server_error_retries=1)
    notifier = SlackNotifier(TOKEN, settings, sleep=sleeps.append)
    slack_server.rate_limit_next(1, retry_after_s=0, method="chat.postMessage")
    slack_server.rate_limit_next(1, retry_after_s=1, method="chat.postMessage")
    slack_server.fail_next(500, 1, method="chat.postMessage")

    result = notifier.send(post())

    assert result.ok, result.error
    assert [c.status for c in slack_server.calls] == [429, 429, 500, 200]
    assert sleeps[:2] == [0.0, 1.0] and 0.5 <= sleeps[2] <= 1.0
    assert len(slack_server.messages("#gpu-alerts")) == 1


def test_rate_limits_after_server_errors_are_still_waited_out(slack_server: SlackServer) -> None:
    sleeps: list[float] = []
    settings = settings_for(slack_server, rate_limit_retries=2, server_error_retries=2)
    notifier = SlackNotifier(TOKEN, settings, sleep=sleeps.append)
    slack_server.fail_next(503, 2, method="chat.postMessage")
    slack_server.rate_limit_next(2, retry_after_s=1, method="chat.postMessage")

    assert notifier.send(post()).ok
    assert [c.status for c in slack_server.calls] == [503, 503, 429, 429, 200]
    assert sleeps[2:] == [1.0, 1.0]


def test_a_server_error_s_retry_after_is_honoured_up_to_the_cap(slack_server: SlackServer) -> None:
    sleeps: list[float] = []
    settings = settings_for(slack_server, max_retry_after_s=2)
    notifier = SlackNotifier(TOKEN, settings, sleep=sleeps.append)
    slack_server.fail_next(503, 1, retry_after_s=2, method="chat.postMessage")
    assert notifier.send(post()).ok
    slack_server.fail_next(503, 1, retry_after_s=30, method="chat.postMessage")
    result = notifier.send(post())

    assert sleeps == [2.0]
    assert [c.status for c in slack_server.calls] == [503, 200, 503]
    assert result == DeliveryResult(
        ok=False,
        error="Slack chat.postMessage: internal_error (HTTP 503, "
        "Retry-After 30 s, more than the 2 s waited out within a cycle)",
    )


def test_a_refused_connection_fails_and_not_for_good(stopped_url: str) -> None:
    base_url = f"{stopped_url}/api/"
    settings = SlackSettings(base_url=base_url, min_interval_s=0, connection_retries=1)

    started = time.monotonic()
    result = SlackNotifier(TOKEN, settings).send(post())

    assert result == DeliveryResult(
        ok=False, error=f"cannot reach Slack at {base_url}: Connection refused"
    )
    assert time.monotonic() - started >= 0.5  # one retry, after slack_sdk's backoff


def test_a_slow_answer_times_out_and_fails_not_for_good(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server, timeout_s=0.3))
    slack_server.delay_next(2, method="chat.postMessage")

    started = time.monotonic()
    result = notifier.send(post())

    assert time.monotonic() - started < 1.5
    assert result == DeliveryResult(
        ok=False, error=f"Slack at {slack_server.base_url} did not answer within 0.3 s"
    )


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "error"), [("xoxb-0000-not-the-right-one", "invalid_auth"), ("", "not_authed")]
)
def test_a_refused_token_fails_for_good_and_slack_is_not_asked_again(
    slack_server: SlackServer, token: str, error: str
) -> None:
    notifier = SlackNotifier(token, settings_for(slack_server))

    first = notifier.send(post())
    later = [
        notifier.send(post("#gpu-costs")),
        notifier.send(Delivery("update", "C0001", "changed", ts="1700000000.000100")),
        notifier.send(Delivery("reply", "C0001", "resolved", ts="1700000000.000100")),
    ]

    assert first == DeliveryResult(
        ok=False, error=f"Slack chat.postMessage: {error} (HTTP 200)", permanent=True
    )
    assert later == [first] * 3
    assert len(slack_server.calls) == 1


def test_a_revoked_token_mid_cycle_stops_the_rest(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server))
    assert notifier.send(post()).ok
    slack_server.fail_next(200, error="token_revoked")

    refused = notifier.send(post())

    assert refused.permanent and refused.error == (
        "Slack chat.postMessage: token_revoked (HTTP 200)"
    )
    assert notifier.send(post("#elsewhere")) is refused
    assert len(slack_server.calls) == 2


def test_an_unknown_channel_is_refused_for_good_for_that_channel_only() -> None:
    with SlackServer(channels=["gpu-alerts"]) as server:
        notifier = SlackNotifier(TOKEN, settings_for(server))

        refused = notifier.send(post("#nowhere"))
        again = notifier.send(post("#nowhere"))
        elsewhere = notifier.send(post("#gpu-alerts"))

        assert refused == DeliveryResult(
            ok=False, error="Slack chat.postMessage: channel_not_found (HTTP 200)", permanent=True
        )
        assert again is refused
        assert elsewhere.ok
        assert [c.params["channel"] for c in server.calls] == ["#nowhere", "#gpu-alerts"]


def test_an_archived_channel_is_refused_by_id_and_by_name(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server))
    posted = notifier.send(post())
    slack_server.refuse_channel("#gpu-alerts", "is_archived")

    refused = notifier.send(Delivery("update", str(posted.channel), "changed", ts=posted.ts))

    assert refused.permanent and refused.error == "Slack chat.update: is_archived (HTTP 200)"
    assert notifier.send(post()) is refused  # the name Slack answered this id for
    assert notifier.send(post("#gpu-costs")).ok
    assert len(slack_server.calls) == 3


def test_a_missing_scope_says_which(slack_server: SlackServer) -> None:
    notifier = SlackNotifier(TOKEN, settings_for(slack_server))
    slack_server.fail_next(200, error="missing_scope")

    result = notifier.send(post())

    assert result.permanent and result.error == ("Slack chat.postMessage: missing_scope (HTTP 200)")
    assert notifier.send(post()).ok  # not a refusal of the token: the next one is tried


# --- secrets ----------------------------------------------------------------------------------


def test_the_token_appears_in_no_log_result_error_or_repr(
    slack_server: SlackServer, stopped_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="slack_sdk")
    wrong = "xoxb-9999-wrong-but-still-secret"
    good = SlackNotifier(
        TOKEN, settings_for(slack_server, server_error_retries=0), sleep=lambda s: None
    )
    bad = SlackNotifier(wrong, settings_for(slack_server))
    gone = SlackNotifier(TOKEN, SlackSettings(base_url=f"{stopped_url}/api/", connection_retries=0))

    slack_server.rate_limit_next(1)
    results = [good.send(post())]
    slack_server.fail_next(500)
    results += [good.send(post()), bad.send(post()), gone.send(post())]

    assert [r.ok for r in results] == [True, False, False, False]
    assert any(
        r.name.startswith("slack_sdk") and r.levelno == logging.DEBUG for r in caplog.records
    )
    for secret in (TOKEN, wrong):
        assert secret not in caplog.text
        assert all(secret not in r.getMessage() for r in caplog.records)
        assert secret not in repr(results)
        assert secret not in repr(good) + repr(bad) + repr(gone)


# --- the incoming webhook ---------------------------------------------------------------------


def test_the_webhook_posts_every_kind_as_a_new_message(slack_server: SlackServer) -> None:
    notifier = WebhookNotifier(slack_server.webhook_url, settings_for(slack_server))

    results = [
        notifier.send(Delivery("post", "#gpu-alerts", "3 idle GPUs", (SECTION,))),
        notifier.send(Delivery("update", "#gpu-alerts", "2 idle GPUs", ts="1.000001")),
        notifier.send(Delivery("reply", "#gpu-alerts", "resolved", ts="1.000001")),
    ]

    assert results == [DeliveryResult(ok=True)] * 3
    assert notifier.updates_in_place is False
    assert slack_server.webhook_messages == [
        {"text": "3 idle GPUs", "blocks": [SECTION]},
        {"text": "2 idle GPUs"},
        {"text": "resolved"},
    ]


def test_webhook_failures_name_the_cause_and_never_the_url(
    slack_server: SlackServer, stopped_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="slack_sdk")
    notifier = WebhookNotifier(
        slack_server.webhook_url, settings_for(slack_server, server_error_retries=0)
    )
    gone_url = stopped_url + WEBHOOK_PATH
    gone = WebhookNotifier(gone_url, settings_for(slack_server, connection_retries=1))

    slack_server.fail_next(500, method=WEBHOOK)
    server_error = notifier.send(post())
    unreachable = gone.send(post())
    slack_server.fail_next(403, error="invalid_token", method=WEBHOOK)
    refused = notifier.send(post())
    again = notifier.send(post())

    assert server_error == DeliveryResult(
        ok=False,
        error="the webhook answered HTTP 500: internal_error "
        "(not retried: notify.slack.server_error_retries is 0)",
    )
    assert unreachable == DeliveryResult(
        ok=False, error="cannot reach the webhook: Connection refused"
    )
    assert refused == DeliveryResult(
        ok=False, error="the webhook answered HTTP 403: invalid_token", permanent=True
    )
    assert again is refused
    assert len(slack_server.calls_to(WEBHOOK)) == 2
    assert "/***" in caplog.text  # slack_sdk logged it, masked
    for url in (slack_server.webhook_url, gone_url):
        assert url not in caplog.text
        assert all(url not in r.getMessage() for r in caplog.records)
    assert WEBHOOK_PATH not in caplog.text + repr([server_error, unreachable, refused])
    assert WEBHOOK_PATH not in repr(notifier) + repr(gone)


def test_the_webhook_retries_each_kind_within_its_own_budget(slack_server: SlackServer) -> None:
    sleeps: list[float] = []
    settings = settings_for(slack_server, rate_limit_retries=1, server_error_retries=1)
    notifier = WebhookNotifier(slack_server.webhook_url, settings, sleep=sleeps.append)
    slack_server.rate_limit_next(1, retry_after_s=1, method=WEBHOOK)
    slack_server.fail_next(502, 1, method=WEBHOOK)

    assert notifier.send(post()) == DeliveryResult(ok=True)
    assert [c.status for c in slack_server.calls_to(WEBHOOK)] == [429, 502, 200]
    assert len(slack_server.webhook_messages) == 1


# --- file uploads (the weekly report) ---------------------------------------------------------


def test_files_upload_v2_works_against_the_server(slack_server: SlackServer) -> None:
    html = b"<!doctype html><title>Weekly GPU report</title><p>$12,345 idle</p>"
    channel = slack_server.channel_id("#gpu-reports")
    client = WebClient(token=TOKEN, base_url=slack_server.base_url)

    response = client.files_upload_v2(
        channel=channel,
        filename="gpuwatch-week-2024-23.html",
        content=html,
        title="GPU report, week 23",
        initial_comment="This week's GPU report",
    )

    file_id = response["file"]["id"]
    stored = slack_server.files[file_id]
    assert (stored.content, stored.filename, stored.title) == (
        html,
        "gpuwatch-week-2024-23.html",
        "GPU report, week 23",
    )
    assert stored.channels == [channel]
    [message] = slack_server.messages("#gpu-reports")
    assert (message.text, message.files) == ("This week's GPU report", [file_id])
