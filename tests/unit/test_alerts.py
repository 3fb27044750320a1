"""The alert lifecycle over cycles: post once, update in place, remind, resolve in the
thread, hold, silence, route, digest, and keep what could not be delivered."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from gpuwatch.config.settings import NotifySettings, Silence
from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.alerts import RulePolicy
from gpuwatch.model.cost import Price
from gpuwatch.model.findings import Severity
from gpuwatch.model.state import CycleState
from gpuwatch.notify.base import Delivery, DeliveryResult
from gpuwatch.notify.lifecycle import notify_cycle
from gpuwatch.notify.planning import due
from tests.builders import AT
from tests.builders import finding as idle

RULES = RulePolicy(
    titles={"gpu-idle": "idle", "gpu-near-oom": "near-OOM"}, waste=frozenset({"gpu-idle"})
)
MIN = timedelta(minutes=1)


class ChatService:
    """An in-process chat service: keeps messages and threads; can be told to fail."""

    name = "chat"
    updates_in_place = True
    delivered_status = "sent"
    can_attach = False
    posts_to_chat = True

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.threads: dict[str, list[str]] = {}
        self.calls: list[Delivery] = []
        self.failing: str | None = None
        self.permanent = False
        self._n = 0

    def send(self, delivery: Delivery) -> DeliveryResult:
        self.calls.append(delivery)
        if self.failing:
            return DeliveryResult(ok=False, error=self.failing, permanent=self.permanent)
        if delivery.kind == "update":
            if delivery.ts not in self.messages:
                return DeliveryResult(ok=False, error="message_not_found", permanent=True)
            self.messages[delivery.ts] = delivery.text
            return DeliveryResult(ok=True, ts=delivery.ts, channel="C1")
        self._n += 1
        ts = f"{self._n}.0001"
        if delivery.kind == "reply":
            self.threads.setdefault(delivery.ts or "", []).append(delivery.text)
        else:
            self.messages[ts] = delivery.text
        return DeliveryResult(ok=True, ts=ts, channel="C1")

    def attach(self, posted, filename, content, title) -> DeliveryResult:
        return DeliveryResult(ok=False, error="no files here")


class PostOnly(ChatService):
    """An incoming webhook: posts only, and names no message."""

    name = "webhook"
    updates_in_place = False

    def send(self, delivery: Delivery) -> DeliveryResult:
        result = super().send(delivery)
        return DeliveryResult(ok=result.ok, error=result.error, permanent=result.permanent)


class Cycles:
    """Runs the lifecycle cycle after cycle, carrying the state like the pipeline does."""

    def __init__(self, chat: ChatService | None = None, **settings) -> None:
        self.chat = chat or ChatService()
        self.settings = NotifySettings.model_validate(settings)
        self.state = CycleState()
        self.rules = RULES
        self.silences: list[Silence] = []
        self.prices: dict = {}

    def run(self, at, findings, actions=()):
        result = notify_cycle(
            findings,
            actions,
            self.state,
            self.chat,
            at,
            self.settings.policy(),
            self.rules,
            [silence.to_domain() for silence in self.silences],
            self.prices,
        )
        self.state = result.state
        return result


def kinds(result) -> list[str]:
    return [n.kind for n in result.notifications]


def test_same_findings_over_two_cycles_post_once():
    c = Cycles()
    first = c.run(AT, [idle(0), idle(1)])
    assert kinds(first) == ["new"] and first.notifications[0].status == "sent"
    assert kinds(c.run(AT + 5 * MIN, [idle(0), idle(1)])) == []
    assert len(c.chat.messages) == 1


def test_state_survives_a_restart_through_its_serialised_form():
    c = Cycles()
    c.run(AT, [idle(0)])
    c.state = CycleState.from_dict(c.state.to_dict())
    assert kinds(c.run(AT + 5 * MIN, [idle(0)])) == []


def test_growth_updates_the_message_in_place_after_group_interval():
    c = Cycles(group_interval="5m")
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    # 2 minutes later: the change waits for the group interval.
    assert kinds(c.run(AT + 2 * MIN, [idle(0), idle(1)])) == []
    grown = c.run(AT + 5 * MIN, [idle(0), idle(1), idle(2)])
    assert kinds(grown) == ["update"] and grown.notifications[0].ts == ts
    assert c.chat.messages[ts].startswith("3 idle A100-SXM4-80GBs in gpu-training")
    shrunk = c.run(AT + 10 * MIN, [idle(0)])
    assert kinds(shrunk) == ["update"] and c.chat.messages[ts].startswith("1 idle A100")


@pytest.mark.parametrize(
    ("elapsed_s", "sent"),
    [(269, False), (270, True)],  # 5 min less the tolerance (30 s): just below, at
)
def test_group_interval_boundary_with_cron_drift(elapsed_s, sent):
    c = Cycles(group_interval="5m")
    c.run(AT, [idle(0)])
    later = c.run(AT + timedelta(seconds=elapsed_s), [idle(0), idle(1)])
    assert (kinds(later) == ["update"]) is sent


def test_due_tolerance_is_a_tenth_of_short_intervals():
    assert not due(AT, 60, AT + timedelta(seconds=53))
    assert due(AT, 60, AT + timedelta(seconds=54))
    assert due(None, 3600, AT)
    assert due(AT, 0, AT)


def test_value_changes_alone_are_not_news():
    c = Cycles()
    c.run(AT, [idle(0)])
    assert kinds(c.run(AT + 10 * MIN, [replace(idle(0), value=0.05)])) == []


def test_resolution_marks_the_message_and_replies_in_its_thread():
    c = Cycles()
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    resolved = c.run(AT + 65 * MIN, [])
    assert kinds(resolved) == ["resolved", "resolved"]
    assert c.chat.messages[ts].startswith("Resolved: 1 idle A100")
    (reply,) = c.chat.threads[ts]
    assert "Resolved at 2026-11-24T03:05:00Z after 1h5m" in reply
    assert c.state.alerts == {}
    assert kinds(c.run(AT + 70 * MIN, [])) == []


def test_send_resolved_off_forgets_quietly():
    c = Cycles(send_resolved=False)
    c.run(AT, [idle(0)])
    assert kinds(c.run(AT + 5 * MIN, [])) == []
    assert c.state.alerts == {}


def test_a_group_back_before_its_resolution_was_delivered_continues_the_same_message():
    c = Cycles()
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    c.chat.failing = "HTTP 500"
    c.run(AT + 5 * MIN, [])
    c.chat.failing = None
    back = c.run(AT + 10 * MIN, [idle(0)])
    assert kinds(back) == []
    assert c.state.alerts[next(iter(c.state.alerts))].ts == ts


def test_reminder_after_repeat_interval_is_a_new_message():
    c = Cycles(repeat_interval="4h")
    first = c.run(AT, [idle(0)]).notifications[0].ts
    assert kinds(c.run(AT + timedelta(hours=3), [idle(0)])) == []
    reminder = c.run(AT + timedelta(hours=4), [idle(0)])
    assert kinds(reminder) == ["reminder"]
    assert reminder.notifications[0].ts != first
    assert "Still firing since 2026-11-24 02:00 UTC" in reminder.notifications[0].text


def test_group_wait_holds_a_new_group_back():
    c = Cycles(group_wait="10m")
    assert kinds(c.run(AT, [idle(0)])) == []
    assert c.run(AT, [idle(0)]).summary.waiting_groups
    assert kinds(c.run(AT + 5 * MIN, [idle(0), idle(1)])) == []
    sent = c.run(AT + 10 * MIN, [idle(0), idle(1)])
    assert kinds(sent) == ["new"] and sent.notifications[0].title.startswith("2 idle")


def test_a_group_gone_before_it_was_ever_told_is_forgotten_silently():
    c = Cycles(group_wait="10m")
    c.run(AT, [idle(0)])
    assert kinds(c.run(AT + 5 * MIN, [])) == []
    assert c.state.alerts == {}


def test_rule_for_holds_findings_until_they_have_fired_long_enough():
    c = Cycles()
    c.rules = replace(RULES, hold_s={"gpu-idle": 600})
    held = c.run(AT, [idle(0, since=AT)])
    assert kinds(held) == [] and held.summary.held_findings == 1
    assert kinds(c.run(AT + timedelta(seconds=599), [idle(0, since=AT)])) == []
    assert kinds(c.run(AT + 10 * MIN, [idle(0, since=AT)])) == ["new"]


def test_silences_mute_findings_and_expire():
    c = Cycles()
    c.silences = [
        Silence.model_validate(
            {
                "match": {"pool": ["gpu-train*"]},
                "until": "2026-11-24T03:00:00Z",
                "comment": "migration",
            }
        )
    ]
    muted = c.run(AT, [idle(0)])
    assert kinds(muted) == [] and muted.summary.silenced_findings == 1
    # A silence ends at its `until`: from then on the finding is news.
    assert kinds(c.run(AT + 60 * MIN, [idle(0)])) == ["new"]


def test_silencing_a_told_group_says_so_in_its_thread():
    c = Cycles()
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    c.silences = [
        Silence.model_validate(
            {
                "match": {"gpu": ["node-a/gpu0"]},
                "until": "2026-11-25T00:00:00Z",
                "comment": "ticket 42",
            }
        )
    ]
    c.run(AT + 5 * MIN, [idle(0)])
    (reply,) = c.chat.threads[ts]
    assert reply.startswith(":mute: Silenced") and "ticket 42" in reply


def test_silence_matches_by_uuid_team_and_node():
    c = Cycles()
    c.silences = [
        Silence.model_validate(
            {"match": {"gpu": ["GPU-node-b-*"]}, "until": "2027-01-01T00:00:00Z"}
        ),
        Silence.model_validate({"match": {"team": ["team-z"]}, "until": "2027-01-01T00:00:00Z"}),
    ]
    result = c.run(AT, [idle(0, node="node-b"), idle(1, team="team-z"), idle(2)])
    assert result.summary.silenced_findings == 2
    assert result.notifications[0].title.startswith("1 idle")


def test_routes_first_match_wins_and_the_rest_go_to_the_default_channel():
    c = Cycles(
        routes=[
            {"match": {"severity": ["critical"]}, "channel": "#gpu-oncall"},
            {"match": {"team": ["team-b"]}, "channel": "#team-b"},
        ]
    )
    result = c.run(
        AT,
        [
            idle(0, team="team-b"),
            idle(1, team="team-b", rule="gpu-near-oom", severity=Severity.CRITICAL),
            idle(2),
        ],
    )
    assert sorted(n.channel for n in result.notifications) == [
        "#gpu-alerts",
        "#gpu-oncall",
        "#team-b",
    ]


def test_group_by_team_splits_a_pool():
    c = Cycles(group_by=["rule", "pool", "team"])
    result = c.run(AT, [idle(0, team="team-a"), idle(1, team="team-b")])
    assert sorted(n.title for n in result.notifications) == [
        "1 idle A100-SXM4-80GB in gpu-training (team-a)",
        "1 idle A100-SXM4-80GB in gpu-training (team-b)",
    ]


def test_a_flood_becomes_one_digest_and_resolves_in_its_thread():
    c = Cycles(digest_over=10)
    findings = [idle(0, node=f"node-{i}", pool=f"pool-{i:02}") for i in range(50)]
    flood = c.run(AT, findings)
    assert kinds(flood) == ["digest"]
    (digest_ts,) = c.chat.messages
    assert c.chat.messages[digest_ts].startswith("50 alert groups firing")
    assert {a.ts for a in c.state.alerts.values()} == {digest_ts}
    # A digest is not rewritten when one of its groups changes.
    grown = [*findings, idle(1, node="node-0", pool="pool-00")]
    assert kinds(c.run(AT + 10 * MIN, grown)) == []
    # Fifty resolutions at once: one message, not fifty replies.
    resolved = c.run(AT + 20 * MIN, [])
    assert kinds(resolved) == ["resolved-digest"]
    assert resolved.notifications[0].title == "50 alert groups resolved"
    assert c.state.alerts == {}


def test_at_the_digest_threshold_each_group_gets_its_own_message():
    c = Cycles(digest_over=3)
    result = c.run(AT, [idle(0, pool=f"p{i}") for i in range(3)])
    assert kinds(result) == ["new"] * 3


def test_updates_beyond_the_channel_budget_wait_for_the_next_cycle():
    c = Cycles(digest_over=2)
    pools = ["p0", "p1", "p2"]
    c.run(AT, [idle(0, pool=pools[0]), idle(0, pool=pools[1])])
    c.run(AT + MIN, [idle(0, pool=p) for p in pools[:2]] + [idle(0, pool=pools[2])])
    grown = [idle(g, pool=p) for p in pools for g in (0, 1)]
    first = c.run(AT + 10 * MIN, grown)
    assert kinds(first) == ["update", "update"]
    assert len(first.summary.deferred_groups) == 1
    assert kinds(c.run(AT + 20 * MIN, grown)) == ["update"]


def test_failed_posts_are_delivered_later_with_the_content_of_that_cycle():
    c = Cycles()
    c.chat.failing = "HTTP 500 from Slack"
    failed = c.run(AT, [idle(0)])
    assert [n.status for n in failed.notifications] == ["failed"]
    assert failed.summary.undelivered_groups
    c.chat.failing = None
    later = c.run(AT + 5 * MIN, [idle(0), idle(1)])
    assert kinds(later) == ["new"] and later.notifications[0].title.startswith("2 idle")
    assert later.summary.undelivered_groups == ()


def test_an_undeliverable_resolution_is_given_up_after_the_max_age_with_a_note():
    c = Cycles(undelivered_max_age="1h")
    c.run(AT, [idle(0)])
    c.chat.failing = "invalid_auth"
    c.chat.permanent = True
    assert c.run(AT + 5 * MIN, []).notes == []
    assert c.state.alerts
    given_up = c.run(AT + 70 * MIN, [])
    assert "gave up telling #gpu-alerts" in given_up.notes[0].message
    assert c.state.alerts == {}


def test_a_message_deleted_in_slack_is_posted_afresh():
    c = Cycles()
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    del c.chat.messages[ts]
    assert [n.status for n in c.run(AT + 10 * MIN, [idle(0), idle(1)]).notifications] == ["failed"]
    assert kinds(c.run(AT + 15 * MIN, [idle(0), idle(1)])) == ["new"]


def test_a_missing_slack_parks_its_groups_until_it_is_back():
    slack = ChatService()
    slack.name = "slack"
    c = Cycles(chat=slack)
    ts = c.run(AT, [idle(0)]).notifications[0].ts
    # The token goes missing: the console takes over with its own memory...
    c.chat = ChatService()
    assert kinds(c.run(AT + 5 * MIN, [idle(0)])) == ["new"]
    assert kinds(c.run(AT + 10 * MIN, [])) == ["resolved", "resolved"]
    # ...and Slack's group is neither forgotten nor resolved in Slack meanwhile.
    assert slack.threads == {}
    c.chat = slack
    resolved = c.run(AT + 15 * MIN, [])
    assert kinds(resolved) == ["resolved", "resolved"] and slack.threads[ts]
    assert c.state.alerts == {} and c.state.parked == {}


def test_post_only_services_get_changes_and_resolutions_as_new_messages():
    c = Cycles(chat=PostOnly())
    c.run(AT, [idle(0)])
    assert kinds(c.run(AT + 5 * MIN, [idle(0)])) == []  # told once, though it names no message
    assert kinds(c.run(AT + 10 * MIN, [idle(0), idle(1)])) == ["new"]
    resolved = c.run(AT + 20 * MIN, [])
    assert kinds(resolved) == ["resolved"]
    assert all(call.kind == "post" for call in c.chat.calls)


def action(status=ActionStatus.PLANNED) -> Action:
    return Action(
        kind="scale_down_node",
        target="Node/train-a100-3",
        reason="idle for 2h",
        status=status,
        dry_run=True,
        key="scale_down_node/train-a100-3",
    )


def test_a_repeated_plan_is_announced_once_then_after_the_repeat_interval():
    c = Cycles(repeat_interval="4h")
    assert kinds(c.run(AT, [], [action()])) == ["actions"]
    assert kinds(c.run(AT + 5 * MIN, [], [action()])) == []
    assert kinds(c.run(AT + timedelta(hours=4), [], [action()])) == ["actions"]
    # A new outcome of the same action is news.
    assert kinds(c.run(AT + timedelta(hours=4, minutes=5), [], [action(ActionStatus.DONE)])) == [
        "actions"
    ]


def test_an_undelivered_actions_message_waits_in_the_outbox():
    c = Cycles(undelivered_max_age="1h")
    c.chat.failing = "HTTP 503"
    first = c.run(AT, [], [action()])
    assert first.summary.outbox == 1
    c.chat.failing = None
    later = c.run(AT + 5 * MIN, [], [action()])
    assert kinds(later) == ["actions"] and later.notifications[0].status == "sent"
    assert c.state.outbox == []


def test_the_outbox_gives_up_after_the_max_age():
    c = Cycles(undelivered_max_age="1h")
    c.chat.failing = "HTTP 503"
    c.run(AT, [], [action()])
    given_up = c.run(AT + 61 * MIN, [])
    assert "gave up delivering" in given_up.notes[0].message
    assert c.state.outbox == []


def test_money_counts_each_gpu_once_and_never_adds_currencies():
    c = Cycles()
    c.prices = {
        ("node-a", "GPU-node-a-0"): Price(Decimal("32.00"), "CNY", "book"),
        ("node-b", "GPU-node-b-0"): Price(Decimal("4.10"), "USD", "book"),
    }
    mig = [idle(0), replace(idle(0), gpu_index=0, rule="gpu-idle", pod="p2")]
    result = c.run(AT, [*mig, idle(0, node="node-b")])
    assert result.notifications[0].title.endswith("32.00 CNY + 4.10 USD/hour wasted")


def test_links_are_encoded_into_the_grafana_url():
    c = Cycles(
        grafana_url="https://grafana.example/d/dcgm?var-node={node}&var-pool={pool}",
        report_url="https://reports.example/latest.html",
    )
    result = c.run(AT, [idle(0, node="node a")])
    context = result.notifications[0].blocks[-1]["elements"][0]["text"]
    assert "var-node=node%20a&var-pool=gpu-training|Grafana" in context
    assert "<https://reports.example/latest.html|Report>" in context


def test_version_1_state_is_read_without_alert_memory():
    state = CycleState.from_dict({"version": 1, "findings_since": {"k": "2026-11-24T00:00:00Z"}})
    assert state.alerts == {} and state.outbox == []
    with pytest.raises(ValueError, match="version"):
        CycleState.from_dict({"version": 4})
    with pytest.raises(ValueError, match="alerts"):
        CycleState.from_dict({"version": 2, "alerts": {"k": {"channel": "#x"}}})


def test_while_the_silences_cannot_be_read_no_new_group_is_posted():
    c = Cycles()
    c.run(AT, [idle(0)])
    result = notify_cycle(
        [idle(0), idle(0, pool="gpu-inference"), idle(1)], (), c.state, c.chat,
        AT + 10 * MIN, c.settings.policy(), c.rules, hold_new=True,
    )  # fmt: skip
    assert [n.kind for n in result.notifications] == ["update"]
    assert result.summary.firing_groups == 2 and result.state.alerts
