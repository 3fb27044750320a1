"""Alerts end to end: gpuwatch cycles posting to a Slack Web API on loopback through the
real slack_sdk, with the state carried between processes."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gpuwatch.config.settings import NotifySettings
from gpuwatch.model.alerts import RulePolicy
from gpuwatch.model.findings import Severity
from gpuwatch.model.state import CycleState
from gpuwatch.notify.lifecycle import notify_cycle
from gpuwatch.notify.slack import SlackNotifier
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from gpuwatch.state.json_file import JsonFileState
from tests.builders import AT, finding, run_gpuwatch
from tests.integration.slack_server import (
    TOKEN,
    SlackServer,
    slack_server_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration
AT_TEXT = SHOWCASE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")


def once(server: SlackServer, out: Path, *args: str, token: str = TOKEN):
    return run_gpuwatch(
        "once",
        "--at",
        AT_TEXT,
        "--out",
        str(out),
        "--output",
        "json",
        *args,
        cwd=out.parent,
        env={
            "SLACK_BOT_TOKEN": token,
            "GPUWATCH_NOTIFY__SLACK__BASE_URL": server.base_url,
            "GPUWATCH_NOTIFY__SLACK__MIN_INTERVAL_S": "0.05",
            "GPUWATCH_NOTIFY__SLACK__CONNECTION_RETRIES": "1",
            "GPUWATCH_NOTIFY__SLACK__SERVER_ERROR_RETRIES": "1",
        },
    )


def posts(server: SlackServer) -> list:
    return server.calls_to("chat.postMessage", status=200)


def test_a_cycle_posts_each_group_once_across_processes_and_never_shows_the_token(
    slack_server: SlackServer, tmp_path: Path
) -> None:
    slack_server.min_interval_s = 0.05
    out = tmp_path / "out"
    first = once(slack_server, out)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    sent = [n for n in result["notifications"] if n["status"] == "sent"]
    groups = result["alerts"]["firing_groups"]
    assert groups >= 6 and len([n for n in sent if n["kind"] == "new"]) == groups
    messages = slack_server.messages("#gpu-alerts")
    assert any(m.text.startswith("4 idle A100-SXM4-80GBs in gpu-training") for m in messages)
    assert any("CNY/hour wasted" in m.text for m in messages)
    assert slack_server.calls_to(status=429) == []  # paced within the channel's limit

    # A second process at the same instant: the state says everything was told.
    before = len(slack_server.calls)
    second = once(slack_server, out)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["notifications"] == []
    assert len(slack_server.calls) == before

    written = [first.stdout, first.stderr, second.stdout, second.stderr]
    written += [p.read_text() for p in out.iterdir() if p.is_file()]
    assert not any(TOKEN in text for text in written)


def test_slack_down_delays_messages_and_never_the_cycle(
    slack_server: SlackServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    slack_server.fail_next(500, times=1_000)
    down = once(slack_server, out)
    assert down.returncode == 0, down.stderr  # analysis and actions are unaffected
    result = json.loads(down.stdout)
    assert result["findings"] and result["cost"] is not None
    assert {n["status"] for n in result["notifications"]} == {"failed"}
    assert "HTTP 500" in result["notifications"][0]["error"]
    assert len(result["alerts"]["undelivered_groups"]) == result["alerts"]["firing_groups"]

    slack_server.clear_faults()  # the outage ends
    back = once(slack_server, out)
    delivered = json.loads(back.stdout)
    assert {n["status"] for n in delivered["notifications"]} == {"sent"}
    assert delivered["alerts"]["undelivered_groups"] == []
    assert len(posts(slack_server)) == len(delivered["notifications"])


def test_a_refused_token_is_reported_once_per_cycle(
    slack_server: SlackServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    refused = once(slack_server, out, token="xoxb-not-the-right-one")
    assert refused.returncode == 0, refused.stderr
    result = json.loads(refused.stdout)
    errors = {n["error"] for n in result["notifications"]}
    assert errors and all("invalid_auth" in e for e in errors)
    assert len(slack_server.calls) == 1  # one request, then no more this cycle
    assert "xoxb-not-the-right-one" not in refused.stdout + refused.stderr


def _cycle(server: SlackServer, state: CycleState, at, findings, sleep=time.sleep, **settings):
    notify = NotifySettings.model_validate(settings)
    slack = notify.slack.model_copy(update={"base_url": server.base_url, "min_interval_s": 0.2})
    return notify_cycle(
        findings,
        (),
        state,
        SlackNotifier(TOKEN, slack, sleep=sleep),
        at,
        notify.policy(),
        RulePolicy({"gpu-idle": "idle"}),
    )


def test_growth_updates_and_resolution_replies_in_the_thread(
    slack_server: SlackServer, tmp_path: Path
) -> None:
    store = JsonFileState(tmp_path / "state.json")
    first = _cycle(slack_server, store.load(), AT, [finding(0)])
    store.save(first.state)
    (message,) = slack_server.messages("#gpu-alerts")

    grown = _cycle(slack_server, store.load(), AT + timedelta(minutes=5), [finding(0), finding(1)])
    store.save(grown.state)
    (updated,) = slack_server.messages("#gpu-alerts")
    assert updated.ts == message.ts and updated.text.startswith("2 idle A100-SXM4-80GBs")

    resolved = _cycle(slack_server, store.load(), AT + timedelta(minutes=30), [])
    store.save(resolved.state)
    (reply,) = slack_server.replies("#gpu-alerts", message.ts)
    assert "Resolved at 2026-11-24T02:30:00Z after 30m" in reply.text
    assert slack_server.messages("#gpu-alerts")[0].text.startswith("Resolved: 2 idle")
    assert store.load().alerts == {}


def test_a_429_is_waited_out_and_the_message_delivered(slack_server: SlackServer) -> None:
    slack_server.rate_limit_next(1, retry_after_s=1)
    result = _cycle(slack_server, CycleState(), AT, [finding(0)])
    assert [n.status for n in result.notifications] == ["sent"]
    assert len(slack_server.calls_to(status=429)) == 1


CRITICAL = {"rule": "gpu-near-oom", "severity": Severity.CRITICAL, "role": None}


def test_a_5xx_after_waited_out_429s_is_retried_and_delivered_within_the_cycle(
    slack_server: SlackServer,
) -> None:
    slack_server.rate_limit_next(1, retry_after_s=0, method="chat.postMessage")
    slack_server.rate_limit_next(1, retry_after_s=1, method="chat.postMessage")
    slack_server.fail_next(500, 1, method="chat.postMessage")

    result = _cycle(slack_server, CycleState(), AT, [finding(0, **CRITICAL)])

    assert [n.status for n in result.notifications] == ["sent"]
    assert result.summary.undelivered_groups == ()
    assert [c.status for c in slack_server.calls_to("chat.postMessage")] == [429, 429, 500, 200]
    (message,) = slack_server.messages("#gpu-alerts")
    assert "critical" in message.text


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_beyond_the_budget_leaves_the_message_for_the_next_cycle(
    slack_server: SlackServer, status: int
) -> None:
    budget = NotifySettings().slack.server_error_retries
    slack_server.fail_next(status, budget + 1, method="chat.postMessage")

    failed = _cycle(slack_server, CycleState(), AT, [finding(0, **CRITICAL)], sleep=lambda s: None)

    (notification,) = failed.notifications
    assert notification.status == "failed"
    assert notification.error == (
        f"Slack chat.postMessage: internal_error (HTTP {status}, "
        f"still failing after {budget} retries)"
    )
    assert len(failed.summary.undelivered_groups) == 1
    assert slack_server.messages("#gpu-alerts") == []

    later = AT + timedelta(minutes=5)
    delivered = _cycle(slack_server, failed.state, later, [finding(0, **CRITICAL)])

    assert [n.status for n in delivered.notifications] == ["sent"]
    assert delivered.summary.undelivered_groups == ()
    assert len(slack_server.messages("#gpu-alerts")) == 1


def test_fifty_simultaneous_groups_become_one_digest_within_the_rate_limit(
    slack_server: SlackServer,
) -> None:
    slack_server.min_interval_s = 0.2
    flood = [finding(0, node=f"node-{i}", pool=f"pool-{i:02}") for i in range(50)]
    result = _cycle(slack_server, CycleState(), AT, flood, digest_over=10)
    assert [n.kind for n in result.notifications] == ["digest"]
    (digest,) = slack_server.messages("#gpu-alerts")
    assert digest.text.startswith("50 alert groups firing")
    assert slack_server.calls_to(status=429) == []
