"""The approval gate: which planned actions run, given who decided what and when.

Pure: the edges are the TTLs (one second before and at the instant they end), who may
decide (named users, user groups, per pool), which message a decision was given on,
and an approval whose action no longer passes its guards.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.approvals import (
    ApprovalPolicy,
    ApprovalRequest,
    Approvers,
    Decision,
    RequestStatus,
    Verdict,
)
from gpuwatch.planners.approval import Admission, ApprovalInputs, admit, settle
from tests.builders import AT

ALICE, BOB, EVE = "U0ALICE", "U0BOB", "U0EVE"
SRE = "S0SRE"
KEY = "scale_down_node:train-a100-3"
POLICY = ApprovalPolicy(
    pools={"gpu-training": Approvers(users=frozenset({ALICE}), groups=(SRE,)), "cpu": None},
    default=None,
    ttl_s=3600,
    reject_ttl_s=86400,
    channel="#gpu-approvals",
)
MEMBERS = {SRE: frozenset({BOB})}


def scale_down(status: ActionStatus = ActionStatus.PLANNED, reason: str = "6 of 8 GPUs unallocated",
               pool: str = "gpu-training", dry_run: bool = False) -> Action:  # fmt: skip
    return Action(
        kind="scale_down_node",
        target="Node/train-a100-3",
        status=status,
        reason=reason,
        key=KEY,
        dry_run=dry_run,
        pool=pool,
        mechanism="cordon-drain",
    )


def cycle(
    actions: list[Action],
    requests: dict[str, ApprovalRequest] | None = None,
    decisions: tuple[Decision, ...] = (),
    at=AT,
    policy: ApprovalPolicy = POLICY,
) -> Admission:
    return admit(
        ApprovalInputs(at, actions, requests or {}, decisions, policy, MEMBERS, {KEY: "saves"})
    )


def posted(admission: Admission, ts: str = "1700000000.000100") -> dict[str, ApprovalRequest]:
    """The requests as the next cycle reads them: their message delivered."""
    for request in admission.requests.values():
        if request.ts is None:
            request.ts, request.channel_id = ts, "C0001"
        request.told = str(request.status)
    return admission.requests


def decide(user: str, verdict: Verdict = Verdict.APPROVE, at=AT, ts: str | None = None):
    return Decision(KEY, verdict, user, at, "button", ts)


def test_without_approval_the_plan_passes_unchanged_and_nothing_is_asked():
    action = scale_down(pool="cpu")
    admission = cycle([action])
    assert admission.actions == (action,) and admission.requests == {} and not admission.records


def test_a_planned_action_waits_and_its_request_is_recorded():
    admission = cycle([scale_down()])
    (action,) = admission.actions
    assert action.status is ActionStatus.AWAITING_APPROVAL
    assert "<@U0ALICE>" in action.reason and "<!subteam^S0SRE>" in action.reason
    request = admission.requests[KEY]
    assert request.status is RequestStatus.AWAITING and request.channel == "#gpu-approvals"
    assert request.saving == "saves" and "Scale down Node/train-a100-3" in request.what
    assert [r.event for r in admission.records] == ["requested"]


@pytest.mark.parametrize("user", [ALICE, BOB], ids=["named user", "member of a user group"])
def test_an_approvers_approval_lets_the_same_action_run_on_the_next_cycle(user):
    first = cycle([scale_down()])
    second = cycle([scale_down()], posted(first), (decide(user, at=AT + timedelta(minutes=2)),),
                   at=AT + timedelta(minutes=5))  # fmt: skip
    (action,) = second.actions
    assert action.status is ActionStatus.PLANNED
    assert action.details["approval"] == {
        "decision": "approve",
        "by": user,
        "at": "2026-11-24T02:02:00Z",
        "until": "2026-11-24T03:02:00Z",
    }
    assert [r.event for r in second.records] == ["approve"]
    assert second.approved() == [second.requests[KEY]]


def test_a_click_from_someone_who_is_not_an_approver_changes_nothing_and_is_said_once():
    first = cycle([scale_down()])
    requests = posted(first)
    second = cycle([scale_down()], requests, (decide(EVE),))
    assert second.actions[0].status is ActionStatus.AWAITING_APPROVAL
    (record,) = second.records
    assert record.event == "ignored" and "may not decide gpu-training" in record.detail
    # A reaction is read again every cycle: it is not reported again.
    third = cycle([scale_down()], posted(second), (decide(EVE),))
    assert third.records == [] and third.actions[0].status is ActionStatus.AWAITING_APPROVAL


def test_a_decision_on_an_older_message_of_the_same_key_is_not_taken():
    requests = posted(cycle([scale_down()]), ts="2.000000")
    admission = cycle([scale_down()], requests, (decide(ALICE, ts="1.000000"),))
    assert admission.actions[0].status is ActionStatus.AWAITING_APPROVAL
    assert admission.records[0].event == "ignored" and "closed" in admission.records[0].detail


def test_an_approval_is_good_until_one_second_before_its_ttl_and_expires_at_it():
    requests = posted(cycle([scale_down()]))
    approved = posted(cycle([scale_down()], requests, (decide(ALICE),)))
    just_before = cycle([scale_down()], _copy(approved), at=AT + timedelta(seconds=3599))
    assert just_before.actions[0].status is ActionStatus.PLANNED
    at_ttl = cycle([scale_down()], _copy(approved), at=AT + timedelta(seconds=3600))
    assert at_ttl.actions[0].status is ActionStatus.AWAITING_APPROVAL
    events = [r.event for r in at_ttl.records]
    assert events == ["expired", "requested"], "a fresh request, on a new message"
    assert at_ttl.requests[KEY].ts is None and at_ttl.requests[KEY].status is RequestStatus.AWAITING
    archived = [r for k, r in at_ttl.requests.items() if k != KEY]
    assert [r.status for r in archived] == [RequestStatus.EXPIRED], "kept until its message says so"


def test_a_rejection_holds_the_action_back_until_reject_ttl():
    requests = posted(cycle([scale_down()]))
    rejected = posted(cycle([scale_down()], requests, (decide(ALICE, Verdict.REJECT),)))
    held = cycle([scale_down()], _copy(rejected), at=AT + timedelta(seconds=86399))
    assert held.actions[0].status is ActionStatus.REFUSED
    assert held.actions[0].reason == (
        "rejected by <@U0ALICE> at 2026-11-24T02:00:00Z; held back until 2026-11-25T02:00:00Z"
    )
    over = cycle([scale_down()], _copy(rejected), at=AT + timedelta(seconds=86400))
    assert over.actions[0].status is ActionStatus.AWAITING_APPROVAL
    assert [r.event for r in over.records] == ["requested"]


def test_a_later_decision_overrides_an_earlier_one_before_the_action_runs():
    requests = posted(cycle([scale_down()]))
    decisions = (decide(ALICE), decide(BOB, Verdict.REJECT, at=AT + timedelta(seconds=30)))
    admission = cycle([scale_down()], requests, decisions, at=AT + timedelta(minutes=1))
    assert admission.actions[0].status is ActionStatus.REFUSED
    assert [r.event for r in admission.records] == ["approve", "reject"]


def test_an_approved_action_a_guard_now_refuses_is_not_run_and_the_approval_is_spent():
    requests = posted(cycle([scale_down()]))
    approved = posted(cycle([scale_down()], requests, (decide(ALICE),)))
    kill_switch = "kill switch gpuwatch/gpuwatch-actions/enabled is not 'true'"
    refused = scale_down(ActionStatus.REFUSED, kill_switch)
    admission = cycle([refused], approved, at=AT + timedelta(minutes=5))
    assert admission.actions == (refused,), "the guard's refusal stands, with its reason"
    request = admission.requests[KEY]
    assert request.status is RequestStatus.REFUSED
    assert request.reason == f"approved, but a guard refused it: {kill_switch}"
    assert [r.event for r in admission.records] == ["refused"]


def test_an_approved_action_no_longer_planned_is_refused_and_a_waiting_one_withdrawn():
    approved = posted(cycle([scale_down()], posted(cycle([scale_down()])), (decide(ALICE),)))
    gone = cycle([], approved)
    assert gone.requests[KEY].status is RequestStatus.REFUSED
    assert "no longer planned on this cycle's data" in gone.requests[KEY].reason
    waiting = cycle([], posted(cycle([scale_down()])))
    assert waiting.requests[KEY].status is RequestStatus.WITHDRAWN


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        (ActionStatus.DONE, RequestStatus.DONE, "drained"),
        (ActionStatus.FAILED, RequestStatus.FAILED, "eviction refused: HTTP 403"),
        (ActionStatus.REFUSED, RequestStatus.REFUSED, "the actions Lease is held by gpuwatch-1"),
        (ActionStatus.PLANNED, RequestStatus.DONE, "dry run: nothing was written"),
    ],
)
def test_settle_records_what_became_of_an_approved_action(outcome, status, reason):
    requests = posted(cycle([scale_down()]))
    admission = cycle([scale_down()], requests, (decide(ALICE),))
    (action,) = admission.actions
    settle(admission, [Action(**{**action.__dict__, "status": outcome, "reason": reason})], AT)
    assert admission.requests[KEY].status is status and admission.requests[KEY].reason == reason
    assert admission.records[-1].event == str(status)


def test_a_global_mode_covers_actions_of_unlisted_pools_and_of_none():
    policy = ApprovalPolicy(default=Approvers(users=frozenset({ALICE})), channel="#a")
    admission = cycle([scale_down(pool="elsewhere")], policy=policy)
    assert admission.actions[0].status is ActionStatus.AWAITING_APPROVAL


def _copy(requests: dict[str, ApprovalRequest]) -> dict[str, ApprovalRequest]:
    return {k: ApprovalRequest.from_dict(k, v.to_dict()) for k, v in requests.items()}
