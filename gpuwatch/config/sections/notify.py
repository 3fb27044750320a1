"""Settings of the messages to people: routes, silences, Slack and alert timing.

The alert lifecycle (``gpuwatch.notify``) speaks in ``gpuwatch.model.alerts`` types, not
settings; ``to_domain()`` and ``NotifySettings.policy()`` here are the one conversion.
"""

from __future__ import annotations

import string
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from gpuwatch.config.sections.approval import InteractivitySettings
from gpuwatch.config.sections.base import DurationS, Section, secret
from gpuwatch.model import alerts as domain

MatchPatterns = list[str] | None


class AlertMatch(Section):
    """Which findings a route or a silence applies to. Each field is a list of shell-style
    patterns (`gpu-*`, `team-?`); a finding matches when every field that is set has a
    pattern matching it. No field set: every finding."""

    rule: MatchPatterns = Field(None, description="Rule ids.")
    severity: MatchPatterns = Field(None, description="`info`, `warning`, `critical`.")
    pool: MatchPatterns = Field(None, description="Node pools.")
    namespace: MatchPatterns = Field(None, description="Namespaces of the pods holding the GPU.")
    team: MatchPatterns = Field(None, description="Teams (see `attribution.team_label`).")
    node: MatchPatterns = Field(None, description="Node names.")
    gpu: MatchPatterns = Field(
        None, description="GPU UUIDs, or `node/gpuN` for the GPU with index N on a node."
    )

    def to_domain(self) -> domain.Matcher:
        return domain.Matcher(
            **{name: tuple(getattr(self, name) or ()) for name in AlertMatch.model_fields}
        )


class Route(Section):
    """Send the findings a match selects to a channel. The first route that matches wins;
    findings no route claims go to `notify.channel`."""

    match: AlertMatch = Field(default_factory=AlertMatch)
    channel: str = Field(min_length=1, description="Slack channel name (`#gpu-team-a`) or id.")

    def to_domain(self) -> domain.Route:
        return domain.Route(self.channel, self.match.to_domain())


class Silence(Section):
    """Mute the findings a match selects until a time. Muted findings stay in the cycle
    result and the reports; only messages are held back."""

    match: AlertMatch
    until: datetime = Field(description="RFC 3339 instant at which the silence ends.")
    comment: str = Field("", description="Why, and who to ask.")

    @field_validator("until")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expected an instant with a time zone, e.g. 2026-12-01T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _not_everything(self) -> Silence:
        if not any(getattr(self.match, name) for name in AlertMatch.model_fields):
            raise ValueError("a silence must match something: set at least one match field")
        return self

    def to_domain(self) -> domain.Silence:
        return domain.Silence(self.match.to_domain(), self.until, self.comment)


class SlackSettings(Section):
    """Slack. With a bot token, gpuwatch posts through the Web API: it updates messages in
    place and replies in their threads. An incoming webhook is the simpler alternative:
    it can only post, so updates and resolutions arrive as new messages, to the
    webhook's own channel. Neither configured (or no token found): messages go to the
    console when `notify.console` is on."""

    token_env: str = Field(
        "SLACK_BOT_TOKEN",
        description="Environment variable holding the bot token (`xoxb-...`). Needs the "
        "`chat:write` scope (and `files:write` for the weekly report). The token is "
        "never logged or printed.",
        json_schema_extra=secret("env"),
    )
    token_file: Path | None = Field(
        None,
        description="File holding the bot token, e.g. a mounted Secret; read every cycle, "
        "so a rotated token needs no restart. Takes precedence over `token_env`.",
        json_schema_extra=secret("file"),
    )
    webhook_url_env: str | None = Field(
        None,
        description="Environment variable holding an incoming-webhook URL, used when no "
        "bot token is found. The URL is a secret and is never logged.",
        json_schema_extra=secret("env", webhook=True),
    )
    webhook_url_file: Path | None = Field(
        None,
        description="File holding an incoming-webhook URL (e.g. a mounted Secret).",
        json_schema_extra=secret("file", webhook=True),
    )
    base_url: str = Field(
        "https://slack.com/api/",
        description="Web API base URL (GovSlack: `https://slack-gov.com/api/`).",
        json_schema_extra=secret("url"),
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Per request.")
    min_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Least time between two messages to one channel. Slack allows about "
        "one per second per channel and answers 429 above it.",
    )
    rate_limit_retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Times a 429 is waited out (for its `Retry-After`) before the "
        "message is left for the next cycle. Counted apart from 5xx answers and "
        "connection errors.",
    )
    max_retry_after_s: float = Field(
        30.0,
        gt=0,
        description="Longest `Retry-After` waited out within a cycle; a longer one "
        "leaves the message for the next cycle rather than stalling the cycle.",
    )
    connection_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a message after a connection error (refused, reset), "
        "with backoff (0.5-1 s, then 1-2 s, doubling). Counted apart from 429s and 5xx "
        "answers.",
    )
    server_error_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a message Slack answered 500, 502, 503 or 504, with the "
        "same backoff (or the answer's `Retry-After`, up to `max_retry_after_s`). Counted "
        "apart from 429s and connection errors, so that waiting out rate limits never "
        "spends them.",
    )
    interactivity: InteractivitySettings = Field(
        default_factory=InteractivitySettings,
        description="Buttons (Approve, Reject, Snooze) and how their clicks reach the daemon.",
    )


class NotifySettings(Section):
    """Messages to people: one per incident group, updated in place as the group changes,
    resolved in its thread. The timing settings follow Alertmanager's meaning."""

    console: bool = Field(
        True,
        description="Print the messages that would be sent when no Slack is configured, so "
        "that a dry run shows exactly what people would read.",
    )
    channel: str = Field(
        "#gpu-alerts", min_length=1, description="Channel for messages no route claims."
    )
    max_rows: int = Field(
        10,
        ge=1,
        le=50,
        description="GPU rows listed in one message; the rest are counted. Slack truncates "
        "long messages and people stop reading after ten rows.",
    )
    group_by: list[domain.GroupLabel] = Field(
        default_factory=lambda: ["rule", "pool"],
        min_length=1,
        description="Findings with equal values of these fields (within a channel) share "
        'one message: `rule, pool` gives "5 idle A100s in gpu-training".',
    )
    group_wait_s: DurationS = Field(
        0,
        alias="group_wait",
        description="How long a new group waits before its first message, so that "
        "findings arriving together are sent together. A cycle already batches what it "
        "finds, so the default sends on the first cycle; a rule's own `for` delays its "
        "findings.",
    )
    group_interval_s: DurationS = Field(
        300,
        alias="group_interval",
        gt=0,
        description="Least time between two changes of a group's message (GPUs added "
        "or resolved): changes within it are gathered into one update.",
    )
    repeat_interval_s: DurationS = Field(
        14400,
        alias="repeat_interval",
        gt=0,
        description="A group still firing after this long is posted again as a new "
        "message (a reminder); Alertmanager's default, 4 h.",
    )
    send_resolved: bool = Field(
        True,
        description="When a group stops firing, mark its message resolved and say so in "
        "its thread.",
    )
    digest_over: int = Field(
        10,
        ge=1,
        description="A cycle that would post more new messages than this to one channel "
        "posts one digest listing them instead.",
    )
    undelivered_max_age_s: DurationS = Field(
        86400,
        alias="undelivered_max_age",
        gt=0,
        description="A message that could not be delivered is retried on every cycle "
        "for this long, then given up with a data-quality note.",
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="Channel per rule, severity, pool, namespace or team; the first "
        "matching route wins.",
    )
    silences: list[Silence] = Field(
        default_factory=list, description="Findings muted until a time."
    )
    silences_configmap: str | None = Field(
        "gpuwatch/gpuwatch-silences",
        description="`namespace/name` of a ConfigMap whose `silences.yaml` key holds more "
        "silences (a list in the form of `notify.silences`), read every cycle from "
        "the cluster; missing is fine. Unset: none.",
    )
    grafana_url: str | None = Field(
        None,
        description="Dashboard link put on messages; `{node}`, `{pool}` and `{rule}` are "
        "replaced (URL-encoded) by the group's values.",
        json_schema_extra=secret("url"),
    )
    report_url: str | None = Field(
        None,
        description="Link to the latest report, on messages.",
        json_schema_extra=secret("url"),
    )
    slack: SlackSettings = Field(default_factory=SlackSettings)

    @field_validator("grafana_url")
    @classmethod
    def _known_placeholders(cls, url: str | None) -> str | None:
        if url is None:
            return None
        for _, name, _, _ in string.Formatter().parse(url):
            if name is not None and name not in {"node", "pool", "rule"}:
                raise ValueError(f"unknown placeholder {{{name}}}; expected node, pool or rule")
        return url

    def policy(self) -> domain.AlertPolicy:
        """What the alert lifecycle needs of these settings (silences come separately:
        the cluster holds more of them)."""
        # The policy's fields are these settings under the same names and meanings.
        same = {f.name: getattr(self, f.name) for f in fields(domain.AlertPolicy)}
        return domain.AlertPolicy(
            **{
                **same,
                "group_by": tuple(self.group_by),
                "routes": tuple(route.to_domain() for route in self.routes),
            }
        )
