"""What an approval request says, through its life, and what its thread is told.

One message per request, rewritten in place as it goes: awaiting approval (what the
action does, why, the saving it buys, the guards it passed, who may decide, and the
buttons or the reactions to decide with), approved by whom and when, running, then done,
failed, refused, expired or withdrawn with the reason. Decisions and outcomes are also
said in the message's thread, so that the channel keeps the story in order.

Buttons carry the action key as their value; Slack signs what a click sends back, so
the key is the request's own. The same module composes the Snooze buttons put on alert
messages when clicks are answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gpuwatch.model.approvals import ApprovalRecord, ApprovalRequest, Approvers, RequestStatus
from gpuwatch.model.durations import format_duration, rfc3339
from gpuwatch.notify.compose import Message

APPROVE_ACTION, REJECT_ACTION = "gpuwatch_approve", "gpuwatch_reject"
SNOOZE_ACTION = "gpuwatch_snooze"
"""``action_id`` of the buttons; a Snooze button's value is JSON: the group and how long."""
SNOOZES_S = {"1 h": 3600, "1 day": 86400, "1 week": 7 * 86400}

GUARDS = {
    "scale_down_node": "pool allowlisted, maintenance window, cooldown, no pending GPU pod, "
    "disruption budget, floor, only idle opted-in pods to evict, kill switch, live data",
    "migrate_to_spot": "opted in, fresh checkpoint, spot capacity of the same GPU, minimum "
    "saving, jobs per cycle, kill switch, live data",
}
"""What a planned action of each kind has passed (``gpuwatch.planners``)."""

_STATUS = {
    RequestStatus.AWAITING: (":raising_hand:", "Approval needed"),
    RequestStatus.APPROVED: (":ballot_box_with_check:", "Approved"),
    RequestStatus.REJECTED: (":no_entry_sign:", "Rejected"),
    RequestStatus.DONE: (":white_check_mark:", "Done"),
    RequestStatus.FAILED: (":x:", "Failed"),
    RequestStatus.REFUSED: (":no_entry:", "Not run"),
    RequestStatus.EXPIRED: (":hourglass:", "Expired"),
    RequestStatus.WITHDRAWN: (":heavy_minus_sign:", "Withdrawn"),
}
RUNNING = "running"
"""What ``told`` holds while an approved action is being carried out."""


def compose_request(
    request: ApprovalRequest,
    approvers: Approvers | None,
    *,
    interactive: bool,
    approve_reaction: str,
    reject_reaction: str,
    ttl_s: int,
    running: bool = False,
) -> Message:
    """The request's message as it should read now."""
    icon, label = _STATUS[request.status]
    if running:
        icon, label = ":gear:", "Running"
    title = f"{label}: {request.target}"
    lines = [f"*What:* {request.what}"]
    if request.saving:
        lines.append(f"*Saving:* {request.saving}")
    if request.status is RequestStatus.AWAITING:
        lines.append(f"*Guards passed:* {GUARDS.get(request.kind, 'every guard of its planner')}")
        lines.append(
            f"*Approvers:* {approvers.mention() if approvers else 'none'} "
            f"(an approval is good for {format_duration(ttl_s)})"
        )
    status = _status_line(request, running)
    if status:
        lines.append(status)
    body = "\n".join(lines)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {body}"[:3000]}},
    ]
    how = ""
    if request.status is RequestStatus.AWAITING:
        if interactive:
            blocks.append(_decision_buttons(request))
        how = (
            "Approve or Reject with the buttons."
            if interactive
            else f"React :{approve_reaction}: to approve or :{reject_reaction}: to reject."
        )
    notes = [how] if how else []
    if request.dry_run:
        notes.append("Dry run: a decision is recorded, nothing is written.")
    notes.append(f"key {request.key}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(notes)}]})
    text = f"{title}\n{body}\n" + " ".join(notes)
    return Message(title, text, tuple(blocks))


def compose_record(record: ApprovalRecord) -> Message | None:
    """The thread reply for one record of the audit trail; None for those the message
    itself shows (``requested``)."""
    who = f"<@{record.user}>" if record.user else "somebody"
    detail = f": {record.detail}" if record.detail else ""
    at = rfc3339(record.at)
    said = {
        "approve": f":ballot_box_with_check: Approved by {who} at {at}.",
        "reject": f":no_entry_sign: Rejected by {who} at {at}.",
        "ignored": f":information_source: Not taken: {record.detail}. Nothing changed.",
        "expired": f":hourglass: {record.detail}. A new request follows if it is still planned.",
        "done": f":white_check_mark: Done at {at}{detail}",
        "failed": f":x: Failed at {at}: {record.detail}",
        "refused": f":no_entry: Not run at {at}: {record.detail}",
        "withdrawn": f":heavy_minus_sign: Withdrawn at {at}: {record.detail}",
    }.get(record.event)
    if said is None:
        return None
    blocks = ({"type": "section", "text": {"type": "mrkdwn", "text": said[:3000]}},)
    return Message(f"{record.event}: {record.target}", said, blocks)


def snooze_buttons(group_key: str, teams: Sequence[str]) -> dict[str, Any]:
    """The Snooze buttons of an alert group's message (1 h, 1 day, 1 week)."""
    return {
        "type": "actions",
        "block_id": "gpuwatch_snooze",
        "elements": [
            {
                "type": "button",
                "action_id": f"{SNOOZE_ACTION}_{seconds}",
                "text": {"type": "plain_text", "text": f"Snooze {label}"},
                "value": json.dumps({"g": group_key, "s": seconds, "t": list(teams)})[:2000],
            }
            for label, seconds in SNOOZES_S.items()
        ],
    }


def _decision_buttons(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": "gpuwatch_approval",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": _value(request),
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this action?"},
                    "text": {"type": "mrkdwn", "text": request.what[:300]},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
            {
                "type": "button",
                "action_id": REJECT_ACTION,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": _value(request),
            },
        ],
    }


def _value(request: ApprovalRequest) -> str:
    """What an Approve or Reject button carries: the action key and its pool."""
    return json.dumps({"k": request.key, "p": request.pool})


def _status_line(request: ApprovalRequest, running: bool) -> str:
    by = f"<@{request.decided_by}>" if request.decided_by else "somebody"
    when = rfc3339(request.decided_at) if request.decided_at else "?"
    until = rfc3339(request.until) if request.until else "?"
    if running:
        return f"*Status:* approved by {by} at {when}; running now"
    match request.status:
        case RequestStatus.APPROVED:
            return f"*Status:* approved by {by} at {when}; runs on the next cycle, until {until}"
        case RequestStatus.REJECTED:
            return f"*Status:* rejected by {by} at {when}; held back until {until}"
        case RequestStatus.AWAITING:
            return ""
    decided = f"approved by {by} at {when}; " if request.decided_by else ""
    return f"*Status:* {decided}{request.reason or str(request.status)}"
