"""Reading people's answers from Slack: reactions on the requests, user groups' members,
and the clicks a daemon's listeners queued; and answering a click privately.

A CronJob has nobody listening for clicks, so every cycle reads the reactions on each
open request (``reactions.get``, scope ``reactions:read``): the approve reaction from an
approver approves, the reject reaction rejects (both from one person: reject, the safer
reading). Approvers named as user groups are looked up every cycle
(``usergroups.users.list``, scope ``usergroups:read``), so that a change of on-call
needs no redeploy. A read that fails is an error on the answers, not an exception: the
other requests' answers still count, and a request whose reactions could not be read
simply waits a cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from http.client import HTTPException
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse, WebClient

from gpuwatch.config.settings import SlackSettings
from gpuwatch.model.approvals import ApprovalPolicy, ApprovalRequest, Decision, Verdict
from gpuwatch.notify.base import Answers, Asked
from gpuwatch.notify.interactions import Inbox
from gpuwatch.notify.slack import client_options
from gpuwatch.util.redact import redact, register_secret

log = logging.getLogger(__name__)


class SlackApprovals:
    """The approval source of a cycle that talks to Slack with the bot token."""

    def __init__(self, token: str, settings: SlackSettings, inbox: Inbox | None = None) -> None:
        """``inbox``: the daemon's queued clicks (None in a CronJob)."""
        register_secret(token)
        self._client = WebClient(
            token=token,
            base_url=settings.base_url,
            **client_options("slack_sdk.web.base_client", settings, time.sleep),
        )
        self._inbox = inbox
        self.interactive = inbox is not None and inbox.listening

    def read(self, asked: Asked) -> Answers:
        policy = asked.policy
        errors: list[str] = []
        decisions: list[Decision] = []
        for request in asked.requests:
            if request.ts is None or request.channel_id is None:
                continue
            try:
                decisions.extend(self._reactions(request, policy, asked.at))
            except SlackError as exc:
                errors.append(f"reactions on the request for {request.target} not read: {exc}")
        clicked, snoozes = self._inbox.drain() if self._inbox is not None else ((), ())
        decisions.extend(clicked)
        # Who is in a group matters only to judge somebody's answer: none, no lookup.
        groups = (policy.groups() if decisions else frozenset()) | (
            asked.owner_groups if snoozes else frozenset()
        )
        members: dict[str, frozenset[str]] = {}
        for group in sorted(groups):
            try:
                members[group] = self.members(group)
            except SlackError as exc:
                errors.append(f"members of user group {group} not read: {exc}")
        return Answers(tuple(decisions), snoozes, members, tuple(errors))

    def members(self, group: str) -> frozenset[str]:
        """A user group's members; ``SlackError`` when Slack would not say."""
        data = self._call("usergroups.users.list", lambda: self._client.usergroups_users_list(
            usergroup=group))  # fmt: skip
        users = data.get("users")
        if not isinstance(users, list):
            raise SlackError("usergroups.users.list answered without users")
        return frozenset(str(u) for u in users)

    def answer(self, channel: str, user: str, text: str) -> None:
        """Tell one person privately, in the channel they clicked in (``chat.postEphemeral``)."""
        self._call(
            "chat.postEphemeral",
            lambda: self._client.chat_postEphemeral(channel=channel, user=user, text=text),
        )

    def _reactions(
        self, request: ApprovalRequest, policy: ApprovalPolicy, at: datetime
    ) -> list[Decision]:
        data = self._call(
            "reactions.get",
            lambda: self._client.reactions_get(
                channel=str(request.channel_id), timestamp=str(request.ts), full=True
            ),
        )
        message = data.get("message") or {}
        by_user: dict[str, Verdict] = {}
        for reaction in message.get("reactions") or []:
            name = str(reaction.get("name", "")).split("::")[0]  # skin tones: "+1::skin-tone-2"
            if name == policy.approve_reaction:
                verdict = Verdict.APPROVE
            elif name == policy.reject_reaction:
                verdict = Verdict.REJECT
            else:
                continue
            for user in reaction.get("users") or []:
                if by_user.get(str(user)) is not Verdict.REJECT:
                    by_user[str(user)] = verdict
        return [
            Decision(request.key, verdict, user, at, "reaction", request.ts)
            for user, verdict in sorted(by_user.items())
        ]

    def _call(self, method: str, call: Callable[[], SlackResponse]) -> dict[str, Any]:
        try:
            response = call()
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            code = data.get("error") or f"HTTP {exc.response.status_code}"
            needed = f" (needs {data['needed']})" if data.get("needed") else ""
            raise SlackError(redact(f"Slack {method}: {code}{needed}")) from None
        except (SlackClientError, OSError, HTTPException, ValueError) as exc:
            raise SlackError(redact(f"Slack {method}: {exc}")) from None
        return response.data if isinstance(response.data, dict) else {}


class SlackError(Exception):
    """Slack did not answer a read; the message names the method and the cause."""
