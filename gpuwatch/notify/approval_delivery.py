"""Carrying approval requests to Slack: each posted once, then rewritten in place.

A request is posted in the thread of the alert that caused its action where that alert
has a message (a node's findings for a scale-down, a workload's for a move to spot),
else in the approval channel. From then on its message is updated whenever its status
changes (``ApprovalRequest.told`` remembers what it shows), and each decision or
outcome is said once in the thread. A delivery that fails is retried on the next cycle
(the request still differs from what it shows); a closed request is forgotten once its
message shows how it ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from gpuwatch.model.approvals import ApprovalPolicy, ApprovalRecord, ApprovalRequest
from gpuwatch.notify.approval_messages import RUNNING, compose_record, compose_request
from gpuwatch.notify.base import Notifier
from gpuwatch.notify.compose import Message
from gpuwatch.notify.delivery import Outcome, carry, delivery_of
from gpuwatch.notify.planning import Intent, Step


@dataclass(frozen=True)
class Thread:
    """An alert's message, whose thread a request may be posted in."""

    channel: str
    channel_id: str
    ts: str


def tell_requests(
    requests: dict[str, ApprovalRequest],
    records: Sequence[ApprovalRecord],
    policy: ApprovalPolicy,
    notifier: Notifier,
    at: datetime,
    threads: Mapping[str, Thread],
    outcome: Outcome,
) -> None:
    """Post, update and reply as the requests (mutated) and this cycle's records say;
    then forget the closed requests whose message shows their end."""
    for key, request in sorted(requests.items(), key=lambda item: item[1].requested_at):
        if request.ts is None:
            if request.open:
                _post(request, policy, notifier, at, threads.get(key), outcome)
        elif request.told != str(request.status):
            _update(request, policy, notifier, at, outcome, running=False)
    by_ts = {r.ts: r for r in requests.values() if r.ts is not None}
    for record in records:
        request = by_ts.get(record.message_ts)
        message = compose_record(record)
        if request is None or request.ts is None or message is None:
            continue
        _reply(request, message, notifier, outcome)
    for key in [k for k, r in requests.items() if _finished(r)]:
        del requests[key]


def tell_running(
    requests: Sequence[ApprovalRequest],
    policy: ApprovalPolicy,
    notifier: Notifier,
    at: datetime,
    outcome: Outcome,
) -> None:
    """Before the approved actions run: their messages say so (best effort; what they
    end as is said after)."""
    for request in requests:
        if request.ts is not None:
            _update(request, policy, notifier, at, outcome, running=True)


def _post(
    request: ApprovalRequest,
    policy: ApprovalPolicy,
    notifier: Notifier,
    at: datetime,
    thread: Thread | None,
    outcome: Outcome,
) -> None:
    message = _message(request, policy, running=False)
    if thread is not None and notifier.updates_in_place:
        request.channel, request.thread_ts = thread.channel, thread.ts
        delivery = delivery_of("reply", thread.channel_id, message, thread.ts)
    else:
        delivery = delivery_of("post", request.channel, message)
    result = carry(notifier, _step(request, message), delivery, outcome)
    if not result.ok:
        request.failed_since = request.failed_since or at
        request.last_error = result.error
        return
    request.ts = result.ts or f"{notifier.name}@{at.isoformat()}"
    request.channel_id = result.channel
    request.told = str(request.status)
    request.failed_since = request.last_error = None


def _update(
    request: ApprovalRequest,
    policy: ApprovalPolicy,
    notifier: Notifier,
    at: datetime,
    outcome: Outcome,
    *,
    running: bool,
) -> None:
    message = _message(request, policy, running=running)
    if notifier.updates_in_place and request.channel_id:
        delivery = delivery_of("update", request.channel_id, message, request.ts)
    else:  # a service that only posts hears of each change as a new message
        delivery = delivery_of("post", request.channel, message)
    result = carry(notifier, _step(request, message), delivery, outcome)
    if result.ok:
        request.told = RUNNING if running else str(request.status)
        request.failed_since = request.last_error = None
        return
    request.failed_since = request.failed_since or at
    request.last_error = result.error
    if result.error and "message_not_found" in result.error:
        # Deleted in Slack: an open request is posted afresh (its reactions are gone with
        # it), a closed one is let go.
        request.ts = request.channel_id = request.thread_ts = None


def _reply(
    request: ApprovalRequest, message: Message, notifier: Notifier, outcome: Outcome
) -> None:
    if not notifier.updates_in_place or not request.channel_id:
        return  # the message itself, posted anew, says it
    thread = request.thread_ts or request.ts
    carry(
        notifier,
        _step(request, message),
        delivery_of("reply", request.channel_id, message, thread),
        outcome,
    )


def _message(request: ApprovalRequest, policy: ApprovalPolicy, *, running: bool) -> Message:
    return compose_request(
        request,
        policy.approvers_for(request.pool),
        interactive=policy.interactive,
        approve_reaction=policy.approve_reaction,
        reject_reaction=policy.reject_reaction,
        ttl_s=policy.ttl_s,
        running=running,
    )


def _step(request: ApprovalRequest, message: Message) -> Step:
    return Step(Intent.APPROVAL, (request.key,), request.channel, message)


def _finished(request: ApprovalRequest) -> bool:
    """Closed, and its message shows it (or it was never posted)."""
    return not request.open and (request.ts is None or request.told == str(request.status))
