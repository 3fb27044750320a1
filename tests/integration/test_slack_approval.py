"""Approval in Slack, end to end: plan, ask, decide, and act once; or change nothing and
say why.

Real clients against local servers: slack-sdk's Web API client and its own Socket Mode
client against the Slack test servers on loopback, the kubernetes client against the
emulated API server, which takes the writes. The cycle is the real one, run twice or
three times with its state in a file.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from gpuwatch.config.settings import Settings, SlackSettings
from gpuwatch.daemon import Daemon
from gpuwatch.model.actions import ActionStatus
from gpuwatch.notify.approval_messages import APPROVE_ACTION, REJECT_ACTION, SNOOZE_ACTION
from gpuwatch.notify.slack_listeners import InteractionsEndpoint, SocketModeListener
from gpuwatch.sources.simulator.layout import SHOWCASE_AT
from tests.integration.approval_world import ALICE, BOB, EVE, KEY, NODE, ApprovalWorld
from tests.integration.prometheus_server import free_port
from tests.integration.slack_server import TOKEN, SlackServer
from tests.integration.slack_server_interactive import APP_TOKEN
from tests.integration.socket_mode_server import SocketModeServer, block_actions

pytestmark = pytest.mark.integration

T = SHOWCASE_AT


@pytest.fixture
def slack():
    with SlackServer() as server:
        yield server


@pytest.fixture
def world(kube_emulator, slack, tmp_path):
    return ApprovalWorld.build(kube_emulator, slack, tmp_path, T)


@pytest.fixture
def socket_mode(world, slack):
    """The daemon's Socket Mode listener, connected to the loopback Socket Mode server."""
    with SocketModeServer() as server:
        slack.interactive.socket_url = server.url
        listener = SocketModeListener(
            APP_TOKEN, SlackSettings(base_url=slack.base_url), world.handler()
        )
        listener.start()
        world.inbox.listening = True
        server.wait_connected()
        yield server
        listener.close()


def click(server, world, user, action_id, value, at=None) -> None:
    """``user`` presses a button on the request; the envelope is acknowledged."""
    message = world.request_message()
    action_ts = f"{(at or world.clock.now).timestamp():.6f}"
    payload = block_actions(user, action_id, value, message.channel, message.ts, action_ts)
    answered = len(world.slack.ephemeral_to(user))
    server.wait_ack(server.send_interactive(payload))
    deadline = time.monotonic() + 5
    while len(world.slack.ephemeral_to(user)) == answered:
        assert time.monotonic() < deadline, "the click was never answered"
        time.sleep(0.02)


def approve_value() -> str:
    return json.dumps({"k": KEY, "p": "gpu-training"})


def action(result, key=KEY):
    return next(a for a in result.actions if a.key == key)


def test_plan_then_approve_in_slack_then_executed_once_on_the_next_cycle(world, socket_mode):
    first = world.cycle()
    assert action(first).status is ActionStatus.AWAITING_APPROVAL
    assert not world.node_writes(), "nothing is written before an approval"
    request = world.request_message()
    assert request.thread_ts is not None, "asked in the thread of the alert that caused it"
    buttons = next(b for b in request.blocks if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == [APPROVE_ACTION, REJECT_ACTION]
    nodes = next(s for s in first.savings if s.kind == "remove_nodes" and NODE in s.nodes)
    assert f"{nodes.net_monthly:,.2f} CNY net per 30 days" in request.text, "the plan's net"
    assert "Guards passed" in request.text and "<@U0ALICE>" in request.text

    click(socket_mode, world, ALICE, APPROVE_ACTION, approve_value())
    assert "Approved scale_down_node:train-a100-3" in world.slack.ephemeral_to(ALICE)[0]
    assert not world.node_writes(), "a click writes nothing: the next cycle decides"

    second = world.cycle(after_s=120)
    done = action(second)
    assert done.status is ActionStatus.DONE, done.reason
    assert done.details["approval"]["by"] == ALICE
    assert world.node()["spec"].get("unschedulable") is True
    events = [(r.event, r.user) for r in second.approvals]
    assert ("approve", ALICE) in events and ("done", None) in events
    record = json.loads(json.dumps(second.to_dict()))["approvals"]
    assert {"key": KEY, "event": "approve", "user": ALICE, "via": "button"}.items() <= next(
        r for r in record if r["event"] == "approve"
    ).items()
    assert world.request_message().text.startswith(f"Done: Node/{NODE}")
    thread = "\n".join(world.thread())
    assert "Approved by <@U0ALICE>" in thread and "Done at" in thread

    writes = len(world.node_writes())
    third = world.cycle(after_s=120)
    assert len(world.node_writes()) == writes, "executed once: the next cycle writes nothing"
    assert all(a.key != KEY or a.status is not ActionStatus.DONE for a in third.actions)


def test_a_click_from_someone_who_is_not_an_approver_is_answered_privately_and_changes_nothing(
    world, socket_mode
):
    world.cycle()
    click(socket_mode, world, EVE, APPROVE_ACTION, approve_value())
    (answer,) = world.slack.ephemeral_to(EVE)
    assert "not an approver of gpu-training" in answer and "nothing changed" in answer
    second = world.cycle(after_s=120)
    assert action(second).status is ActionStatus.AWAITING_APPROVAL
    assert not world.node_writes()


def test_an_approver_by_user_group_is_looked_up_in_slack(world, socket_mode):
    world.cycle()
    click(socket_mode, world, BOB, APPROVE_ACTION, approve_value())
    assert action(world.cycle(after_s=120)).status is ActionStatus.DONE


def test_an_expired_approval_changes_nothing_and_the_thread_says_so(world, socket_mode):
    world.cycle()
    clicked_at = world.clock.now
    click(socket_mode, world, ALICE, APPROVE_ACTION, approve_value(), at=clicked_at)
    # The next cycle comes only after the approval's hour.
    second = world.cycle(after_s=3600)
    assert action(second).status is ActionStatus.AWAITING_APPROVAL
    assert not world.node_writes()
    assert any(r.event == "expired" for r in second.approvals)
    assert any("expired unused" in text for text in world.thread())


def test_a_rejection_holds_the_action_back(world, socket_mode):
    world.cycle()
    click(socket_mode, world, ALICE, REJECT_ACTION, approve_value())
    second = world.cycle(after_s=120)
    held = action(second)
    assert held.status is ActionStatus.REFUSED and held.reason.startswith("rejected by <@U0ALICE>")
    assert not world.node_writes()
    assert world.request_message().text.startswith(f"Rejected: Node/{NODE}")


def test_an_approval_whose_action_no_longer_passes_its_guards_is_refused_with_the_reason(
    world, socket_mode
):
    world.cycle()
    click(socket_mode, world, ALICE, APPROVE_ACTION, approve_value())
    switch = world.emulator.get("v1", "ConfigMap", "gpuwatch-actions", "gpuwatch")
    switch["data"]["enabled"] = "false"
    world.emulator.add(switch)
    second = world.cycle(after_s=120)
    assert action(second).status is ActionStatus.REFUSED
    assert not world.node_writes()
    thread = "\n".join(world.thread())
    assert "Not run" in thread and "kill switch" in thread


def test_reactions_decide_where_nothing_listens_for_clicks(world):
    """A CronJob: the request says which reactions decide; an approver's counts, a
    stranger's is said to be not taken, once."""
    world.cycle()
    request = world.request_message()
    assert not [b for b in request.blocks if b["type"] == "actions"], "no buttons: nobody listens"
    assert "React :white_check_mark: to approve" in request.text
    world.slack.react(request.channel, request.ts, "white_check_mark", EVE)
    second = world.cycle(after_s=120)
    assert action(second).status is ActionStatus.AWAITING_APPROVAL
    assert any("may not decide gpu-training" in text for text in world.thread())
    world.slack.react(request.channel, request.ts, "white_check_mark", BOB)
    third = world.cycle(after_s=120)
    assert action(third).status is ActionStatus.DONE
    assert [r.via for r in third.approvals if r.event == "approve"] == ["reaction"]
    said = sum("may not decide" in text for text in world.thread())
    assert said == 1, "a stranger's reaction is answered once, not every cycle"


def test_snooze_mutes_the_group_and_its_message_says_who(world, socket_mode, slack):
    world.cycle()
    channel = slack.channel_id("#gpu-alerts")
    alert = next(
        m
        for m in slack._messages
        if m.channel == channel and m.thread_ts is None and "unallocated" in m.text.lower()
    )
    snooze = next(b for b in alert.blocks if b.get("block_id") == "gpuwatch_snooze")
    day = next(e for e in snooze["elements"] if e["action_id"] == f"{SNOOZE_ACTION}_86400")
    payload = block_actions(
        ALICE, day["action_id"], day["value"], alert.channel, alert.ts, f"{T.timestamp():.6f}"
    )
    socket_mode.wait_ack(socket_mode.send_interactive(payload))
    deadline = time.monotonic() + 5
    while not slack.ephemeral_to(ALICE):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = world.cycle(after_s=120)
    assert any(r.event == "snooze" and r.user == ALICE for r in second.approvals)
    replies = [m.text for m in slack._messages if m.thread_ts == alert.ts]
    assert any("Silenced" in t and "snoozed from Slack by <@U0ALICE>" in t for t in replies)
    state = json.loads(world.state_file.read_text())
    assert state["snoozes"][0]["user"] == ALICE


RESEARCHERS = "S0RESEARCH"


def test_only_the_owners_of_a_group_s_teams_may_snooze_it_a_user_group_counting(
    kube_emulator, slack, tmp_path
):
    """Owners named as a user group (not an approver group): its members are read from
    Slack when a snooze asks."""
    slack.interactive.usergroups[RESEARCHERS] = [BOB]
    owners = {"research": [RESEARCHERS]}
    world = ApprovalWorld.build(kube_emulator, slack, tmp_path, T, snooze_owners=owners)
    world.inbox.listening = True  # a daemon's: alerts carry Snooze
    world.cycle()
    channel = slack.channel_id("#gpu-alerts")
    alert, button = next(
        (m, e)
        for m in slack._messages
        if m.channel == channel and m.thread_ts is None
        for b in m.blocks
        if b.get("block_id") == "gpuwatch_snooze"
        for e in b["elements"]
        if "research" in json.loads(e["value"])["t"] and e["action_id"].endswith("_3600")
    )
    at = f"{T.timestamp():.6f}"
    clicked = world.handler()  # as the daemon's listeners hand it the clicks
    for user in (EVE, BOB):
        clicked.handle(
            block_actions(user, button["action_id"], button["value"], alert.channel, alert.ts, at)
        )
    second = world.cycle(after_s=120)
    group = json.loads(button["value"])["g"]
    events = [(r.event, r.user) for r in second.approvals if r.key == group]
    assert events == [("ignored", EVE), ("snooze", BOB)]
    assert ("usergroups.users.list", RESEARCHERS) in [
        (c.method, c.params.get("usergroup")) for c in slack.calls
    ]


# -- the HTTP endpoint -------------------------------------------------------------------


SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _signed(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    base = f"v0:{timestamp}:{body.decode()}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/interactions",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_http_endpoint_takes_only_signed_fresh_requests_once(world):
    world.cycle()
    now = [T.timestamp()]
    endpoint = InteractionsEndpoint(SECRET, world.handler(), "127.0.0.1", 0, clock=lambda: now[0])
    endpoint.start()
    try:
        message = world.request_message()
        payload = block_actions(ALICE, APPROVE_ACTION, approve_value(), message.channel,
                                message.ts, f"{T.timestamp():.6f}")  # fmt: skip
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        stamp = int(now[0])
        assert _post(endpoint.port, body, {}) == 401, "unsigned"
        assert _post(endpoint.port, body, _signed(body, stamp, "another-secret")) == 401
        assert _post(endpoint.port, body, _signed(body, stamp - 301)) == 401, "too old"
        assert world.inbox.drain() == ((), ()), "nothing refused was queued"
        assert _post(endpoint.port, body, _signed(body, stamp)) == 200
        assert _post(endpoint.port, body, _signed(body, stamp)) == 401, "a replay"
        decisions, _ = world.inbox.drain()
        assert [(d.key, d.user, d.via) for d in decisions] == [(KEY, ALICE, "button")]
    finally:
        endpoint.close()


# -- the daemon ----------------------------------------------------------------------


def test_the_daemon_takes_clicks_over_socket_mode_and_runs_the_next_cycle_at_once(
    slack, tmp_path, monkeypatch
):
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    settings = Settings.model_validate(
        {
            "daemon": {"interval": "1h", "report_cron": None},
            "self_metrics": {"address": "127.0.0.1", "port": free_port()},
            "output": {"dir": str(tmp_path / "out")},
            "state": {"backend": "memory"},
            "notify": {"slack": {"base_url": slack.base_url, "min_interval_s": 0}},
            "actions": {"pools": {"gpu-training": {"approval": "slack", "approvers": [ALICE]}}},
        }
    )
    with SocketModeServer() as server:
        slack.interactive.socket_url = server.url
        daemon = Daemon(lambda: settings, io.StringIO())
        daemon.start()
        try:
            server.wait_connected()
            assert daemon.inbox.listening
            deadline = time.monotonic() + 60
            while daemon.cycles < 1:
                assert time.monotonic() < deadline, "the first cycle never ran"
                time.sleep(0.05)
            payload = block_actions(ALICE, APPROVE_ACTION, approve_value(), "C0001",
                                    "1.000001", f"{time.time():.6f}")  # fmt: skip
            server.wait_ack(server.send_interactive(payload))
            while daemon.cycles < 2:  # an hour's interval: only the click runs it now
                assert time.monotonic() < deadline, "the click did not run a cycle"
                time.sleep(0.05)
        finally:
            daemon.stop()
    assert "Approved scale_down_node:train-a100-3" in slack.ephemeral_to(ALICE)[0]
    result = daemon.last_result
    assert result is not None
    (record,) = [r for r in result.approvals if r.user == ALICE]
    assert record.event == "ignored" and "closed" in record.detail, "no such request is open"
