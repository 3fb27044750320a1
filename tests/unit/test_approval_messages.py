"""What approval requests say, how clicks are read and checked, and what a snooze mutes."""

from __future__ import annotations

import json
from datetime import timedelta

from gpuwatch.model.approvals import (
    ApprovalPolicy,
    ApprovalRecord,
    ApprovalRequest,
    Approvers,
    RequestStatus,
    Snooze,
    SnoozeRequest,
    Verdict,
)
from gpuwatch.notify.approval_delivery import tell_requests
from gpuwatch.notify.approval_messages import (
    APPROVE_ACTION,
    REJECT_ACTION,
    SNOOZE_ACTION,
    compose_record,
    compose_request,
    snooze_buttons,
)
from gpuwatch.notify.base import Delivery, DeliveryResult
from gpuwatch.notify.delivery import Outcome
from gpuwatch.notify.interactions import ClickHandler, Inbox, clicks
from gpuwatch.notify.snoozes import apply_snoozes, as_silences, labels_of
from tests.builders import AT

ALICE, EVE = "U0ALICE", "U0EVE"
APPROVERS = Approvers(users=frozenset({ALICE}))
POLICY = ApprovalPolicy(pools={"gpu-training": APPROVERS}, channel="#a", ttl_s=3600)


def request(**changes) -> ApprovalRequest:
    fields = {
        "key": "scale_down_node:n1",
        "kind": "scale_down_node",
        "target": "Node/n1",
        "pool": "gpu-training",
        "channel": "#a",
        "requested_at": AT,
        "what": "Scale down Node/n1 in gpu-training (cordon-drain): 8 of 8 GPUs unallocated",
        "saving": "24,000.00 CNY net per 30 days (24,000.00 gross)",
        "dry_run": False,
    }
    return ApprovalRequest(**{**fields, **changes})


def compose(r: ApprovalRequest, interactive: bool = True, running: bool = False):
    reactions = {"approve_reaction": "white_check_mark", "reject_reaction": "x"}
    return compose_request(
        r, APPROVERS, interactive=interactive, ttl_s=3600, running=running, **reactions
    )


def test_an_awaiting_request_says_what_why_the_saving_the_guards_and_who_may_decide():
    message = compose(request())
    assert message.title == "Approval needed: Node/n1"
    for said in ("8 of 8 GPUs unallocated", "24,000.00 CNY net per 30 days", "floor",
                 "kill switch", "<@U0ALICE>", "good for 1h"):  # fmt: skip
        assert said in message.text
    (buttons,) = [b for b in message.blocks if b["type"] == "actions"]
    approve, reject = buttons["elements"]
    assert (approve["action_id"], reject["action_id"]) == (APPROVE_ACTION, REJECT_ACTION)
    assert json.loads(approve["value"]) == {"k": "scale_down_node:n1", "p": "gpu-training"}
    assert approve["confirm"]["text"]["text"].startswith("Scale down Node/n1")


def test_without_listeners_the_request_asks_for_reactions_and_has_no_buttons():
    message = compose(request(), interactive=False)
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "React :white_check_mark: to approve or :x: to reject" in message.text


def test_the_message_follows_the_request_s_life():
    decided = {"decided_by": ALICE, "decided_at": AT, "until": AT + timedelta(hours=1)}
    approved = compose(request(status=RequestStatus.APPROVED, **decided))
    assert "approved by <@U0ALICE> at 2026-11-24T02:00:00Z" in approved.text
    assert not [b for b in approved.blocks if b["type"] == "actions"], "decided: no buttons"
    running = compose(request(status=RequestStatus.APPROVED, **decided), running=True)
    assert running.title == "Running: Node/n1" and "running now" in running.text
    failed = compose(request(status=RequestStatus.FAILED, reason="eviction refused", **decided))
    assert failed.title == "Failed: Node/n1" and "eviction refused" in failed.text
    dry = compose(request(dry_run=True))
    assert "Dry run: a decision is recorded, nothing is written." in dry.text


def test_each_decision_and_outcome_is_said_in_the_thread_and_a_request_is_not():
    said = compose_record(ApprovalRecord(AT, "k", "Node/n1", "approve", ALICE, "button"))
    assert said is not None and said.text.startswith(
        ":ballot_box_with_check: Approved by <@U0ALICE>"
    )
    assert compose_record(ApprovalRecord(AT, "k", "Node/n1", "requested")) is None


def _payload(user: str, action_id: str, value: str) -> dict:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": "C1"},
        "container": {"message_ts": "1.1", "channel_id": "C1"},
        "actions": [{"action_id": action_id, "value": value, "action_ts": f"{AT.timestamp()}"},
                    {"action_id": "someone_elses", "value": "x"}],
    }  # fmt: skip


class Answers:
    def __init__(self):
        self.said: list[tuple[str, str, str]] = []
        self.woken = 0

    def answer(self, channel: str, user: str, text: str) -> None:
        self.said.append((channel, user, text))

    def wake(self) -> None:
        self.woken += 1


def handler(inbox: Inbox, answers: Answers) -> ClickHandler:
    return ClickHandler(inbox, lambda: POLICY, lambda g: frozenset(), answers.answer, answers.wake)


def test_a_non_approver_s_click_is_answered_privately_and_queues_nothing():
    inbox, answers = Inbox(), Answers()
    value = json.dumps({"k": "scale_down_node:n1", "p": "gpu-training"})
    handler(inbox, answers).handle(_payload(EVE, APPROVE_ACTION, value))
    assert answers.said == [("C1", EVE, answers.said[0][2])]
    assert "not an approver of gpu-training" in answers.said[0][2]
    assert inbox.drain() == ((), ()) and answers.woken == 0


def test_an_approver_s_click_is_queued_with_its_message_and_time_and_wakes_the_cycle():
    inbox, answers = Inbox(), Answers()
    value = json.dumps({"k": "scale_down_node:n1", "p": "gpu-training"})
    handler(inbox, answers).handle(_payload(ALICE, REJECT_ACTION, value))
    (decision,), _ = inbox.drain()
    assert (decision.verdict, decision.user, decision.at, decision.message_ts) == (
        Verdict.REJECT, ALICE, AT, "1.1",
    )  # fmt: skip
    assert answers.woken == 1


def test_buttons_that_are_not_gpuwatch_s_or_carry_nonsense_change_nothing():
    inbox, answers = Inbox(), Answers()
    handle = handler(inbox, answers).handle
    assert handle({"type": "view_submission"}) == []
    assert handle(_payload(ALICE, APPROVE_ACTION, "not json")) == [
        "This button carries no action; nothing changed."
    ]
    assert "not one gpuwatch wrote" in handle(_payload(ALICE, f"{SNOOZE_ACTION}_3600", "{}"))[0]
    too_long = json.dumps({"g": "#a|rule=r", "s": 90 * 86400})
    assert "30 days" in handle(_payload(ALICE, f"{SNOOZE_ACTION}_x", too_long))[0]
    assert inbox.drain() == ((), ())


def test_a_full_inbox_says_try_again():
    inbox, answers = Inbox(capacity=1), Answers()
    value = json.dumps({"k": "k", "p": "gpu-training"})
    handle = handler(inbox, answers).handle
    handle(_payload(ALICE, APPROVE_ACTION, value))
    assert "try again" in handle(_payload(ALICE, APPROVE_ACTION, value))[0]


def test_clicks_reads_only_gpuwatch_buttons():
    (click,) = clicks(_payload(ALICE, APPROVE_ACTION, "v"))
    assert (click.action_id, click.user, click.channel, click.at) == (
        APPROVE_ACTION,
        ALICE,
        "C1",
        AT,
    )


def test_snooze_buttons_carry_the_group_the_duration_and_its_teams():
    block = snooze_buttons("#a|rule=r,pool=p", ["vision"])
    values = [json.loads(e["value"]) for e in block["elements"]]
    assert [v["s"] for v in values] == [3600, 86400, 604800]
    assert values[0] == {"g": "#a|rule=r,pool=p", "s": 3600, "t": ["vision"]}


def test_a_snooze_by_an_owner_mutes_the_group_s_labels_until_its_end():
    owners = {"vision": Approvers(groups=("S0VISION",))}
    members = {"S0VISION": frozenset({ALICE})}
    asked = SnoozeRequest("#a|rule=r,pool=p,model=-", ALICE, AT, 86400, "button", ("vision",))
    stranger = SnoozeRequest("#a|rule=r,pool=p", EVE, AT, 3600, "button", ("vision",))
    expired = Snooze("#a|rule=x", {"rule": "x"}, ALICE, AT - timedelta(days=2), AT)
    outcome = apply_snoozes([asked, stranger], [expired], owners, members, AT)
    (snooze,) = outcome.snoozes
    assert snooze.until == AT + timedelta(days=1) and snooze.match["pool"] == "p"
    assert [(r.event, r.user) for r in outcome.records] == [("snooze", ALICE), ("ignored", EVE)]
    (silence,) = as_silences(outcome.snoozes)
    assert silence.match.rule == ("r",) and silence.match.pool == ("p",)
    assert silence.comment == "snoozed from Slack by <@U0ALICE>"


def test_a_group_of_no_listed_team_may_be_snoozed_by_anyone():
    asked = SnoozeRequest("#a|rule=r", EVE, AT, 3600, "button", ("serving",))
    outcome = apply_snoozes([asked], [], {"vision": APPROVERS}, {}, AT)
    assert [s.user for s in outcome.snoozes] == [EVE]


def test_labels_of_a_group_key():
    assert labels_of("#gpu|rule=r,pool=a") == {"rule": "r", "pool": "a"}
    assert labels_of("#gpu") == {}


class Refusing:
    """A notifier whose every update finds the message deleted in Slack."""

    name, updates_in_place, delivered_status = "slack", True, "sent"
    can_attach, posts_to_chat = False, True

    def __init__(self) -> None:
        self.sent: list[Delivery] = []

    def send(self, delivery: Delivery) -> DeliveryResult:
        self.sent.append(delivery)
        if delivery.kind == "update":
            return DeliveryResult(ok=False, error="Slack chat.update: message_not_found")
        return DeliveryResult(ok=True, ts=f"2.{len(self.sent):06d}", channel="C1")

    def attach(self, posted, filename, content, title):  # pragma: no cover - unused
        raise AssertionError


def test_a_request_deleted_in_slack_is_posted_afresh_while_open_and_let_go_once_closed():
    notifier = Refusing()
    waiting = request(status=RequestStatus.APPROVED, ts="1.0", channel_id="C1", told="awaiting",
                      decided_by=ALICE, decided_at=AT, until=AT + timedelta(hours=1))  # fmt: skip
    done = request(key="k2", status=RequestStatus.DONE, ts="1.5", channel_id="C1", told="approved")
    requests = {waiting.key: waiting, done.key: done}
    tell_requests(requests, [], POLICY, notifier, AT, {}, Outcome())
    assert list(requests) == [waiting.key], "the closed one is let go"
    assert waiting.ts is None and waiting.told == "awaiting"
    tell_requests(requests, [], POLICY, notifier, AT, {}, Outcome())
    assert waiting.ts is not None and waiting.told == "approved"
    assert [d.kind for d in notifier.sent] == ["update", "update", "post"]


def test_a_click_while_slack_will_not_list_a_user_group_is_answered_and_queues_nothing():
    def unreadable(group: str) -> frozenset[str]:
        raise OSError("usergroups.users.list: HTTP 503")

    inbox, answers = Inbox(), Answers()
    policy = ApprovalPolicy(pools={"gpu-training": Approvers(groups=("S0SRE",))}, channel="#a")
    handler = ClickHandler(inbox, lambda: policy, unreadable, answers.answer, answers.wake)
    value = json.dumps({"k": "scale_down_node:n1", "p": "gpu-training"})
    (said,) = handler.handle(_payload(ALICE, APPROVE_ACTION, value))
    assert "could not read who may approve" in said and answers.said[0][2] == said
    assert inbox.drain() == ((), ()) and answers.woken == 0
