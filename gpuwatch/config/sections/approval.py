"""Settings of human approval in Slack: which actions wait for a person, who may decide,
and how Slack's answers reach gpuwatch (Socket Mode, an HTTP endpoint, or reactions).

``actions.approval`` (or a pool's ``approval``) puts actions under approval; the ways in
are ``notify.slack.interactivity``. ``approval_policy`` is the one conversion into the
domain's ``ApprovalPolicy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gpuwatch.config.sections.base import DurationS, Section, secret
from gpuwatch.model.approvals import ApprovalPolicy, Approvers

SlackId = Annotated[str, Field(pattern=r"^[UWS][A-Z0-9]{2,}$")]
"""A Slack user id (``U…``, ``W…``) or user group id (``S…``)."""
Mode = Literal["auto", "slack"]


class ApprovalSettings(Section):
    """Human approval of actions in Slack. `slack`: each planned action is posted once
    (in the thread of the alert that caused it, where there is one) with Approve and
    Reject, and runs only once an approver approved it; `auto`: actions run as planned
    when `dry_run` is off. Written as a mapping, or just the mode (`approval: slack`)."""

    mode: Mode = Field("auto", description="`auto` or `slack`, for every pool not set apart.")
    approvers: list[SlackId] = Field(
        default_factory=list,
        description="Who may approve: Slack user ids (`U…`) and user groups (`S…`, "
        "members read every cycle with `usergroups.users.list`).",
    )
    ttl_s: DurationS = Field(
        3600,
        alias="ttl",
        gt=0,
        description="An approval not used by then expires, and the request asks again.",
    )
    reject_ttl_s: DurationS = Field(
        86400,
        alias="reject_ttl",
        gt=0,
        description="A rejected action is held back this long; then it may be asked for again.",
    )
    approve_reaction: str = Field(
        "white_check_mark",
        pattern=r"^[a-z0-9_+\-']+$",
        description="Reaction (emoji name, no colons) that approves where buttons are not "
        "answered (a CronJob).",
    )
    reject_reaction: str = Field(
        "x", pattern=r"^[a-z0-9_+\-']+$", description="Reaction that rejects."
    )
    channel: str | None = Field(
        None,
        description="Where requests go when no alert thread claims them; unset: `notify.channel`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"mode": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _reactions_differ(self) -> ApprovalSettings:
        if self.approve_reaction == self.reject_reaction:
            raise ValueError("approve_reaction and reject_reaction must differ")
        return self


class InteractivitySettings(Section):
    """How button clicks reach gpuwatch. Only `gpuwatch run` (the daemon) listens; a
    CronJob reads the requests' reactions every cycle instead."""

    app_token_env: str = Field(
        "SLACK_APP_TOKEN",
        description="Environment variable holding an app-level token (`xapp-…`, scope "
        "`connections:write`): with it, the daemon takes clicks over Socket Mode (no "
        "public ingress). Never logged.",
        json_schema_extra=secret("env"),
    )
    app_token_file: Path | None = Field(
        None, description="File holding the app-level token.", json_schema_extra=secret("file")
    )
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Slack's interactivity requests on `POST /slack/interactions` at "
        "this port (the Request URL of the app's interactivity). Unset: no endpoint.",
    )
    http_address: str = Field("0.0.0.0", description="Address the endpoint listens on.")
    signing_secret_env: str = Field(
        "SLACK_SIGNING_SECRET",
        description="Environment variable holding the app's signing secret: every request "
        "to the endpoint must carry a valid signature less than 5 minutes old, once.",
        json_schema_extra=secret("env"),
    )
    signing_secret_file: Path | None = Field(
        None, description="File holding the signing secret.", json_schema_extra=secret("file")
    )
    snooze_owners: dict[str, list[SlackId]] = Field(
        default_factory=dict,
        description="Team -> who may snooze its alerts (user and user-group ids). A group "
        "whose teams are not listed may be snoozed by anyone in the channel.",
    )

    def owners(self) -> dict[str, Approvers]:
        """``snooze_owners`` in the domain's terms."""
        return {team: approvers_of(ids) for team, ids in self.snooze_owners.items()}


def approvers_of(ids: list[str]) -> Approvers:
    """Slack ids as approvers: user groups (``S…``) apart from users."""
    return Approvers(
        users=frozenset(i for i in ids if not i.startswith("S")),
        groups=tuple(i for i in ids if i.startswith("S")),
    )


def approval_policy(
    approval: ApprovalSettings,
    pools: Mapping[str, Any],
    channel: str,
    interactive: bool,
) -> ApprovalPolicy:
    """The domain's policy: the global mode and approvers, each pool's where it sets its
    own (``pools``: ``actions.pools``, whose entries have ``approval`` and
    ``approvers``)."""

    def approvers(mode: Mode, ids: list[str]) -> Approvers | None:
        return None if mode == "auto" else approvers_of(ids)

    per_pool = {
        name: approvers(
            policy.approval or approval.mode,
            approval.approvers if policy.approvers is None else policy.approvers,
        )
        for name, policy in pools.items()
        if policy.approval is not None or policy.approvers is not None
    }
    return ApprovalPolicy(
        pools=per_pool,
        default=approvers(approval.mode, approval.approvers),
        ttl_s=approval.ttl_s,
        reject_ttl_s=approval.reject_ttl_s,
        approve_reaction=approval.approve_reaction,
        reject_reaction=approval.reject_reaction,
        channel=approval.channel or channel,
        interactive=interactive,
    )
