"""Which planned actions may run, given what people decided in Slack. Pure.

Under ``actions.approval: slack`` an action the planners would take waits for a person:
its key gets a request (one Slack message, updated in place), and it runs only on a
cycle that plans the same action again, on that cycle's data, while an approver's
approval of that key is fresh (``ttl``). Everything else the planners check still
holds at that moment: an approved action that a guard now refuses (kill switch, stale
data, the pool's budget) is refused, and its approval spent, with the reason.

A decision counts only from an approver of the action's pool, on the request's current
message; a rejection holds the action back for ``reject_ttl``. An approval that expires
unused closes its request, and the action, still planned, gets a fresh message: so a
reaction left on the old one approves nothing. Every decision and outcome is a record
of the audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gpuwatch.model.actions import Action, ActionStatus
from gpuwatch.model.approvals import (
    ApprovalPolicy,
    ApprovalRecord,
    ApprovalRequest,
    Approvers,
    Decision,
    RequestStatus,
    Verdict,
)
from gpuwatch.model.durations import rfc3339


@dataclass(frozen=True)
class ApprovalInputs:
    at: datetime
    actions: Sequence[Action]
    """As the planners planned them this cycle (planned, or refused by a guard)."""
    requests: Mapping[str, ApprovalRequest]
    """The state's requests (not changed)."""
    decisions: Sequence[Decision]
    policy: ApprovalPolicy
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """User group -> its members, read this cycle."""
    savings: Mapping[str, str] = field(default_factory=dict)
    """Action key -> the saving it buys, in words."""


@dataclass
class Admission:
    actions: tuple[Action, ...]
    """The plan with approval applied: waiting ones ``awaiting_approval``, rejected ones
    refused, approved ones as planned (their approval in ``details``)."""
    requests: dict[str, ApprovalRequest]
    records: list[ApprovalRecord]

    def approved(self) -> list[ApprovalRequest]:
        """The requests whose action goes to the actuator this cycle."""
        keys = {
            a.key
            for a in self.actions
            if a.status is ActionStatus.PLANNED and "approval" in a.details
        }
        return [r for k, r in self.requests.items() if k in keys]


def admit(inputs: ApprovalInputs) -> Admission:
    """Apply the decisions, expire what is stale, and gate this cycle's actions."""
    at, policy = inputs.at, inputs.policy
    requests = {k: replace(v) for k, v in inputs.requests.items()}
    records: list[ApprovalRecord] = []
    for decision in sorted(inputs.decisions, key=lambda d: d.at):
        _decide(decision, requests, inputs, records)
    for request in requests.values():
        _expire(request, at, records)
    for key in [k for k, r in requests.items() if _finished_hold(r, at)]:
        del requests[key]
    gated: list[Action] = []
    seen: set[str] = set()
    for action in inputs.actions:
        approvers = policy.approvers_for(action.pool)
        if approvers is None:
            gated.append(action)
            continue
        seen.add(action.key)
        request = requests.get(action.key)
        if action.status is not ActionStatus.PLANNED:
            if request is not None and request.status is not RequestStatus.REJECTED:
                _close_unrun(request, f"a guard refused it: {action.reason}", at, records)
            gated.append(action)
            continue
        if request is None or not request.open:
            _archive(requests, action.key)
            request = requests[action.key] = _request(action, inputs)
            records.append(_record(request, at, "requested", detail=action.reason))
        request.what = _what(action)
        request.saving = inputs.savings.get(action.key, request.saving)
        request.dry_run = action.dry_run
        gated.append(_gate(action, request, approvers.mention()))
    for key, request in requests.items():
        if key not in seen and request.status is not RequestStatus.REJECTED:
            _close_unrun(request, "no longer planned on this cycle's data", at, records)
    return Admission(tuple(gated), requests, records)


def settle(admission: Admission, outcomes: Sequence[Action], at: datetime) -> None:
    """Record what became of the approved actions (``outcomes``: the actuator's), in
    ``admission`` (mutated): done, failed, or refused with the reason."""
    by_key = {a.key: a for a in outcomes}
    for request in admission.approved():
        outcome = by_key.get(request.key)
        if outcome is None:
            continue
        if outcome.status is ActionStatus.DONE:
            status, reason = RequestStatus.DONE, outcome.reason
        elif outcome.status is ActionStatus.FAILED:
            status, reason = RequestStatus.FAILED, outcome.reason
        elif outcome.status is ActionStatus.REFUSED:
            status, reason = RequestStatus.REFUSED, outcome.reason
        else:  # still planned: a dry run, nothing written
            status, reason = RequestStatus.DONE, "dry run: nothing was written"
        request.status, request.reason = status, reason
        admission.records.append(_record(request, at, str(status), detail=reason))


def _decide(
    decision: Decision,
    requests: dict[str, ApprovalRequest],
    inputs: ApprovalInputs,
    records: list[ApprovalRecord],
) -> None:
    request = requests.get(decision.key)
    target = request.target if request is not None else decision.key
    if (
        request is None
        or not request.open
        or (decision.message_ts is not None and request.ts not in (None, decision.message_ts))
    ):
        records.append(
            ApprovalRecord(
                decision.at, decision.key, target, "ignored", decision.user, decision.via,
                "the request is closed: only its newest message may be answered",
            )
        )  # fmt: skip
        return
    approvers = inputs.policy.approvers_for(request.pool)
    if approvers is None or not approvers.allows(decision.user, inputs.members):
        if decision.user not in request.ignored:
            request.ignored.append(decision.user)
            records.append(
                _record(request, decision.at, "ignored", decision,
                        f"<@{decision.user}> may not decide {request.pool or 'these'} "
                        f"actions (approvers: {_who(approvers)})")
            )  # fmt: skip
        return
    approve = decision.verdict is Verdict.APPROVE
    wanted = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
    if request.status is wanted:
        return  # said again (a reaction read on every cycle): the first one counts
    ttl = inputs.policy.ttl_s if wanted is RequestStatus.APPROVED else inputs.policy.reject_ttl_s
    request.status = wanted
    request.decided_by, request.decided_at = decision.user, decision.at
    request.until = decision.at + timedelta(seconds=ttl)
    records.append(_record(request, decision.at, str(decision.verdict), decision))


def _expire(request: ApprovalRequest, at: datetime, records: list[ApprovalRecord]) -> None:
    if request.status is RequestStatus.APPROVED and request.until and request.until <= at:
        request.status = RequestStatus.EXPIRED
        request.reason = (
            f"approval by <@{request.decided_by}> expired unused at {rfc3339(request.until)}"
        )
        records.append(_record(request, at, "expired", detail=request.reason))


def _close_unrun(
    request: ApprovalRequest, reason: str, at: datetime, records: list[ApprovalRecord]
) -> None:
    """An open request whose action will not run this cycle: an approved one is refused
    (the approval is spent: conditions changed since the person said yes), a waiting
    one withdrawn."""
    if request.status is RequestStatus.APPROVED:
        request.status, request.reason = RequestStatus.REFUSED, f"approved, but {reason}"
    elif request.status is RequestStatus.AWAITING:
        request.status, request.reason = RequestStatus.WITHDRAWN, reason
    else:
        return
    records.append(_record(request, at, str(request.status), detail=request.reason))


def _gate(action: Action, request: ApprovalRequest, approvers: str) -> Action:
    if request.status is RequestStatus.AWAITING:
        return replace(
            action,
            status=ActionStatus.AWAITING_APPROVAL,
            reason=f"awaiting approval ({approvers}): {action.reason}",
        )
    assert request.decided_at is not None and request.until is not None
    rejected = request.status is RequestStatus.REJECTED
    approval = {
        "decision": "reject" if rejected else "approve",
        "by": request.decided_by,
        "at": rfc3339(request.decided_at),
        "until": rfc3339(request.until),
    }
    details = {**action.details, "approval": approval}
    if rejected:
        return replace(
            action,
            status=ActionStatus.REFUSED,
            reason=f"rejected by <@{request.decided_by}> at {rfc3339(request.decided_at)}; "
            f"held back until {rfc3339(request.until)}",
            details=details,
        )
    return replace(action, details=details)


def _request(action: Action, inputs: ApprovalInputs) -> ApprovalRequest:
    return ApprovalRequest(
        key=action.key,
        kind=action.kind,
        target=action.target,
        pool=action.pool,
        channel=inputs.policy.channel or "",
        requested_at=inputs.at,
        dry_run=action.dry_run,
    )


def _archive(requests: dict[str, ApprovalRequest], key: str) -> None:
    """A closed request whose message does not show its end yet is kept aside until it
    does: the key's new request takes its place."""
    old = requests.get(key)
    if old is not None and old.told != str(old.status) and old.ts is not None:
        requests[f"{key}#{old.ts}"] = old
    requests.pop(key, None)


def _finished_hold(request: ApprovalRequest, at: datetime) -> bool:
    """A rejection whose hold is over is forgotten: the action may be asked for again."""
    return (
        request.status is RequestStatus.REJECTED
        and request.until is not None
        and (request.until <= at)
    )


def _what(action: Action) -> str:
    how = f" ({action.mechanism})" if action.mechanism else ""
    pool = f" in {action.pool}" if action.pool else ""
    verb = {
        "scale_down_node": "Scale down",
        "migrate_to_spot": "Checkpoint and move to spot",
    }.get(action.kind, action.kind)
    return f"{verb} {action.target}{pool}{how}: {action.reason}"


def _who(approvers: Approvers | None) -> str:
    return approvers.mention() if approvers is not None else "none: its actions need none"


def _record(
    request: ApprovalRequest,
    at: datetime,
    event: str,
    decision: Decision | None = None,
    detail: str = "",
) -> ApprovalRecord:
    return ApprovalRecord(
        at=at,
        key=request.key,
        target=request.target,
        event=event,
        user=decision.user if decision else None,
        via=decision.via if decision else None,
        detail=detail,
        message_ts=request.ts,
    )
