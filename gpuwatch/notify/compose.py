"""Turn findings into messages: one per incident group, readable at a glance.

A group is (rule, pool): "5 idle A100-SXM4-80GB in gpu-training across 3 teams", with a
table of the GPUs and the workloads holding them. Messages are Block Kit with a plain
text fallback, so the same message prints on a console and posts to Slack.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from gpuwatch.model.actions import Action
from gpuwatch.model.findings import Finding, Severity, format_value
from gpuwatch.model.result import Notification

_ICON = {Severity.CRITICAL: ":red_circle:", Severity.WARNING: ":warning:", Severity.INFO: ""}


def compose(
    findings: Sequence[Finding],
    titles: Mapping[str, str],
    channel: str,
    max_rows: int,
) -> list[Notification]:
    """One notification per (rule, pool) group, most severe and largest first."""
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.rule, finding.pool or "(no pool)")].append(finding)
    ordered = sorted(
        groups.items(),
        key=lambda item: (min(_rank(f.severity) for f in item[1]), -len(item[1]), item[0]),
    )
    return [
        _message(rule, pool, group, titles.get(rule, rule), channel, max_rows)
        for (rule, pool), group in ordered
    ]


def _rank(severity: Severity) -> int:
    return {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}[severity]


def _message(
    rule: str, pool: str, group: list[Finding], title: str, channel: str, max_rows: int
) -> Notification:
    severity = min((f.severity for f in group), key=_rank)
    models = sorted({_short_model(f.model) for f in group})
    model = models[0] if len(models) == 1 else "GPU"
    teams = sorted({f.team for f in group if f.team})
    headline = f"{len(group)} {title} {model}{'s' if len(group) != 1 else ''} in {pool}"
    if len(teams) > 1:
        headline += f" across {len(teams)} teams"
    elif teams:
        headline += f" ({teams[0]})"
    icon = _ICON[severity]
    rows = [_row(f) for f in group[:max_rows]]
    more = len(group) - len(rows)
    table = "\n".join(rows) + (f"\n… and {more} more" if more > 0 else "")
    text = f"{headline} [{rule}, {severity}]\n{table}"
    blocks = (
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{icon} *{rule}* ({severity})".strip()},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{table}```"[:3000]}},
    )
    return Notification(
        group_key=f"{rule}|{pool}",
        channel=channel,
        title=headline,
        text=text,
        blocks=blocks,
        finding_keys=tuple(f.key for f in group),
    )


def _row(finding: Finding) -> str:
    where = (
        f"{finding.node}/gpu{finding.gpu_index}"
        if finding.gpu_index is not None
        else (finding.node)
    )
    who = finding.workload or (f"{finding.namespace}/{finding.pod}" if finding.pod else "-")
    value = format_value(finding.value, finding.unit)
    if finding.threshold is not None:
        value += f" (limit {format_value(finding.threshold, finding.unit)})"
    return f"{where:<20} {who:<36} {value}"


def _short_model(model: str | None) -> str:
    if not model:
        return "GPU"
    for prefix in ("NVIDIA ", "NVIDIA-", "Tesla "):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def compose_actions(actions: Sequence[Action], channel: str, dry_run: bool) -> Notification | None:
    """One message for the cycle's actions, taken and refused alike; None without any."""
    if not actions:
        return None
    counts: dict[str, int] = defaultdict(int)
    for action in actions:
        counts[str(action.status)] += 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    title = f"gpuwatch actions{' (dry run)' if dry_run else ''}: {summary}"
    rows = "\n".join(f"{a.status!s:<8} {a.kind:<26} {a.target:<36} {a.reason}" for a in actions)
    return Notification(
        group_key="actions",
        channel=channel,
        title=title,
        text=f"{title}\n{rows}",
        blocks=(
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{rows}```"[:3000]}},
        ),
        finding_keys=tuple(a.key for a in actions),
    )
