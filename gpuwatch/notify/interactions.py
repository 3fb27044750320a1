"""Button clicks from Slack, whichever way they arrive: read, checked, answered, queued.

Socket Mode and the HTTP endpoint both hand a ``block_actions`` payload to one
``ClickHandler``. It answers the person at once and privately (an ephemeral message):
a click from somebody who may not decide says so and changes nothing; an approver's is
queued in the ``Inbox`` for the next cycle, which takes it only if the request is still
open and its message the current one, and plans the action afresh before running it.
Nothing here writes to the cluster or the state: the cycle does, on its own thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpuwatch.model.approvals import ApprovalPolicy, Decision, SnoozeRequest, Verdict
from gpuwatch.model.durations import format_duration
from gpuwatch.notify.approval_messages import APPROVE_ACTION, REJECT_ACTION, SNOOZE_ACTION

log = logging.getLogger(__name__)

MAX_QUEUED = 1000
"""Clicks kept between two cycles at most; more are answered "try again later"."""


@dataclass(frozen=True)
class Click:
    """One button press, as Slack described it."""

    action_id: str
    value: str
    user: str
    channel: str | None
    message_ts: str | None
    at: datetime


class Inbox:
    """Clicks waiting for the next cycle; filled by the listeners' threads, drained by
    the cycle's."""

    def __init__(self, capacity: int = MAX_QUEUED) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._decisions: deque[Decision] = deque()
        self._snoozes: deque[SnoozeRequest] = deque()
        self.listening = False
        """Some listener (Socket Mode, the endpoint) takes clicks: buttons are shown."""

    def put(self, item: Decision | SnoozeRequest) -> bool:
        with self._lock:
            if len(self._decisions) + len(self._snoozes) >= self._capacity:
                return False
            (self._decisions if isinstance(item, Decision) else self._snoozes).append(item)
            return True

    def drain(self) -> tuple[tuple[Decision, ...], tuple[SnoozeRequest, ...]]:
        with self._lock:
            decisions, snoozes = tuple(self._decisions), tuple(self._snoozes)
            self._decisions.clear()
            self._snoozes.clear()
        return decisions, snoozes


def clicks(payload: Mapping[str, Any], at: datetime | None = None) -> list[Click]:
    """The gpuwatch buttons pressed in an interaction payload (others are ignored)."""
    if payload.get("type") != "block_actions":
        return []
    user = (payload.get("user") or {}).get("id")
    channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get(
        "channel_id"
    )
    message_ts = (payload.get("container") or {}).get("message_ts") or (
        payload.get("message") or {}
    ).get("ts")
    found = []
    for action in payload.get("actions") or []:
        action_id = str(action.get("action_id", ""))
        if not action_id.startswith("gpuwatch_") or not isinstance(user, str):
            continue
        when = at or _action_time(action.get("action_ts"))
        found.append(
            Click(action_id, str(action.get("value", "")), user, channel, message_ts, when)
        )
    return found


class ClickHandler:
    """Checks a click, queues what counts, and says what happened to the person who
    clicked (``answer(channel, user, text)``: an ephemeral message)."""

    def __init__(
        self,
        inbox: Inbox,
        policy: Callable[[], ApprovalPolicy],
        members: Callable[[str], frozenset[str]],
        answer: Callable[[str, str, str], None],
        woken: Callable[[], None] = lambda: None,
    ) -> None:
        """``policy``: the current approval policy (settings may be reloaded);
        ``members``: a user group's members; ``woken``: called when a decision is queued
        (the daemon then runs the next cycle at once)."""
        self._inbox = inbox
        self._policy = policy
        self._members = members
        self._answer = answer
        self._woken = woken

    def handle(self, payload: Mapping[str, Any]) -> list[str]:
        """Handle every gpuwatch button in ``payload``; what each click was answered."""
        answered = []
        for click in clicks(payload):
            text = self._one(click)
            answered.append(text)
            if click.channel:
                try:
                    self._answer(click.channel, click.user, text)
                except Exception as exc:  # an answer that fails must not lose the click
                    log.warning("could not answer <@%s> privately: %s", click.user, exc)
        return answered

    def _one(self, click: Click) -> str:
        if click.action_id.startswith(SNOOZE_ACTION):
            return self._snooze(click)
        if click.action_id not in (APPROVE_ACTION, REJECT_ACTION):
            return "This button is not one gpuwatch knows; nothing changed."
        key, pool = _key_and_pool(click.value)
        if key is None:
            return "This button carries no action; nothing changed."
        approvers = self._policy().approvers_for(pool)
        try:
            members = {g: self._members(g) for g in (approvers.groups if approvers else ())}
        except Exception as exc:  # Slack would not say who is in a group: decide nothing
            log.warning("approvers' user groups not read: %s", exc)
            return "gpuwatch could not read who may approve just now; try again in a minute."
        if approvers is None or not approvers.allows(click.user, members):
            who = approvers.mention() if approvers else "nobody: it needs no approval now"
            return (
                f"You are not an approver of {pool or 'these'} actions (approvers: {who}); "
                "nothing changed."
            )
        verdict = Verdict.APPROVE if click.action_id == APPROVE_ACTION else Verdict.REJECT
        decision = Decision(key, verdict, click.user, click.at, "button", click.message_ts)
        if not self._inbox.put(decision):
            return "gpuwatch has too many answers waiting; try again in a minute."
        self._woken()
        if verdict is Verdict.REJECT:
            return f"Rejected {key}: it will not run while the rejection holds."
        ttl = format_duration(self._policy().ttl_s)
        return (
            f"Approved {key}. It runs on the next cycle if it is still planned and passes "
            f"every guard then; the approval is good for {ttl}."
        )

    def _snooze(self, click: Click) -> str:
        try:
            value = json.loads(click.value)
            group, seconds = str(value["g"]), int(value["s"])
            teams = tuple(str(t) for t in value.get("t") or ())
        except (ValueError, KeyError, TypeError):
            return "This Snooze button is not one gpuwatch wrote; nothing changed."
        if not 0 < seconds <= 30 * 86400:
            return "A snooze lasts from a second to 30 days; nothing changed."
        asked = SnoozeRequest(group, click.user, click.at, seconds, "button", teams)
        if not self._inbox.put(asked):
            return "gpuwatch has too many answers waiting; try again in a minute."
        self._woken()
        return (
            f"Snoozing for {format_duration(seconds)} on the next cycle (if you own one of "
            "its teams' workloads)."
        )


def _key_and_pool(value: str) -> tuple[str | None, str | None]:
    try:
        data = json.loads(value)
    except ValueError:
        return None, None
    if not isinstance(data, dict) or not isinstance(data.get("k"), str):
        return None, None
    pool = data.get("p")
    return data["k"], pool if isinstance(pool, str) else None


def _action_time(action_ts: object) -> datetime:
    """When the button was pressed (Slack's ``action_ts``), else now."""
    try:
        return datetime.fromtimestamp(float(str(action_ts)), UTC).replace(microsecond=0)
    except (TypeError, ValueError, OverflowError):
        return datetime.now(UTC).replace(microsecond=0)
