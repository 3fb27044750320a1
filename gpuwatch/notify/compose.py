"""Turn findings into messages people read at a glance.

One message per incident group: "5 idle A100s in gpu-training across 3 teams, 412
CNY/hour wasted", then a table of the GPUs and the workloads holding them. Messages are
Block Kit with a plain-text fallback, so the same message prints on a console and posts
to Slack. Money is in the price book's currency and never summed across currencies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from gpuwatch.model.actions import Action
from gpuwatch.model.cost import Price
from gpuwatch.model.durations import format_duration, format_eta, rfc3339
from gpuwatch.model.findings import Finding, Severity, format_value
from gpuwatch.util.redact import redact_url

_ICON = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":large_blue_circle:",
}
_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
Blocks = tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Message:
    title: str
    text: str
    blocks: Blocks


@dataclass(frozen=True)
class GroupContext:
    """What a group's message says besides its findings."""

    labels: Mapping[str, str]
    """The group's values of ``notify.group_by`` (rule, pool, team, ...)."""
    rule_title: str | None
    """The rule's short title when the group is one rule's ("idle"), else None."""
    waste: bool
    """The GPUs' cost is money wasted (the rule says so)."""
    prices: Mapping[tuple[str, str], Price]
    """(node, GPU UUID) -> the price of one of its GPU-hours."""
    grafana_url: str | None = None
    report_url: str | None = None


def severity_rank(severity: Severity) -> int:
    return _RANK[severity]


def group_severity(findings: Sequence[Finding]) -> Severity:
    return min((f.severity for f in findings), key=severity_rank)


def hourly_cost(findings: Sequence[Finding], prices: Mapping[tuple[str, str], Price]) -> str:
    """The GPUs' cost per hour, per currency ("412.00 CNY"), each GPU counted once;
    empty when none is priced."""
    per_currency: dict[str, Decimal] = defaultdict(Decimal)
    seen: set[tuple[str, str]] = set()
    for finding in findings:
        gpu = (finding.node, finding.gpu_uuid or "")
        price = prices.get(gpu)
        if price is None or gpu in seen:
            continue
        seen.add(gpu)
        per_currency[price.currency] += price.per_gpu_hour
    return " + ".join(f"{amount:,.2f} {cur}" for cur, amount in sorted(per_currency.items()))


def example_prices(findings: Sequence[Finding], prices: Mapping[tuple[str, str], Price]) -> bool:
    """Some of the findings' GPUs are priced from an example price book."""
    return any(
        (price := prices.get((f.node, f.gpu_uuid or ""))) is not None and price.example
        for f in findings
    )


def headline(findings: Sequence[Finding], context: GroupContext) -> str:
    if all(f.subject for f in findings):  # about budgets, not GPUs
        shown = [
            f"{f.subject}: {format_value(f.value, f.unit)} spent "
            f"(limit {format_value(f.threshold, f.unit)})"
            for f in findings[:3]
        ]
        more = f" and {len(findings) - 3} more" if len(findings) > 3 else ""
        return "; ".join(shown) + more
    models = sorted({_short_model(f.model) for f in findings})
    model = models[0] if len(models) == 1 else "GPU"
    n = len(findings)
    what = f"{context.rule_title} " if context.rule_title else ""
    if context.rule_title is None:
        rules = sorted({f.rule for f in findings})
        what = f"{rules[0]} " if len(rules) == 1 else "flagged "
    text = f"{n} {what}{model}{'s' if n != 1 else ''}"
    pools = sorted({f.pool for f in findings if f.pool})
    if len(pools) == 1:
        text += f" in {pools[0]}"
    elif pools:
        text += f" in {len(pools)} pools"
    teams = sorted({f.team for f in findings if f.team})
    if len(teams) > 1:
        text += f" across {len(teams)} teams"
    elif teams:
        text += f" ({teams[0]})"
    cost = hourly_cost(findings, context.prices)
    if cost:
        text += f", {cost}/hour{' wasted' if context.waste else ''}"
        text += " at example prices" if example_prices(findings, context.prices) else ""
    return text


def compose_group(
    findings: Sequence[Finding],
    context: GroupContext,
    max_rows: int,
    note: str | None = None,
) -> Message:
    """The message of one group, most severe GPUs first. ``note`` is put above the table
    (e.g. "Reminder: firing since ...")."""
    severity = group_severity(findings)
    ordered = sorted(findings, key=lambda f: (severity_rank(f.severity), f.node, f.gpu_index or 0))
    title = headline(ordered, context)
    rules = sorted({f.rule for f in ordered})
    rows = [_row(f) for f in ordered[:max_rows]]
    more = len(ordered) - len(rows)
    table = "\n".join(rows) + (f"\n… and {more} more" if more > 0 else "")
    tag = f"{', '.join(rules)}, {severity}"
    text = f"{title} [{tag}]\n" + (f"{note}\n" if note else "") + table
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{_ICON[severity]} *{tag}*"}},
    ]
    if note:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note[:3000]}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{table}```"[:3000]}})
    links = _links(ordered, context)
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return Message(title, text, tuple(blocks))


def compose_resolved(
    title: str, started_at: datetime, at: datetime, resolution: str, detail: str = ""
) -> tuple[Message, Message]:
    """(the group's message as it reads once resolved, the reply in its thread)."""
    lasted = format_duration((at - started_at).total_seconds())
    if resolution == "silenced":
        verb, icon = "Silenced", ":mute:"
    else:
        verb, icon = "Resolved", ":white_check_mark:"
    reply_text = f"{icon} {verb} at {rfc3339(at)} after {lasted}" + (
        f": {detail}" if detail else ""
    )
    struck = f"~{title}~"
    updated = Message(
        f"{verb}: {title}",
        f"{verb}: {title}\n{reply_text}",
        (
            {"type": "header", "text": {"type": "plain_text", "text": f"{verb}: {title}"[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {struck}"[:3000]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": reply_text[:3000]}]},
        ),
    )
    reply = Message(
        f"{verb}: {title}",
        reply_text,
        ({"type": "section", "text": {"type": "mrkdwn", "text": reply_text[:3000]}},),
    )
    return updated, reply


def compose_digest(items: Sequence[tuple[str, Severity]], what: str) -> Message:
    """One message listing many groups: what a flood of alerts becomes."""
    ordered = sorted(items, key=lambda item: (severity_rank(item[1]), item[0]))
    title = f"{len(ordered)} alert groups {what}"
    lines = [f"{_ICON[sev]} {name}" for name, sev in ordered]
    body = "\n".join(lines)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
    ]
    # A section holds at most 3,000 characters: split the list across sections.
    chunk: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > 2900 and chunk:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
    return Message(title, f"{title}\n{body}", tuple(blocks[:50]))


def compose_actions(actions: Sequence[Action], dry_run: bool) -> Message | None:
    """One message for the cycle's actions, taken and refused alike; None without any."""
    if not actions:
        return None
    counts: dict[str, int] = defaultdict(int)
    for action in actions:
        counts[str(action.status)] += 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    title = f"gpuwatch actions{' (dry run)' if dry_run else ''}: {summary}"
    rows = "\n".join(f"{a.status!s:<8} {a.kind:<26} {a.target:<36} {a.reason}" for a in actions)
    return Message(
        title,
        f"{title}\n{rows}",
        (
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{rows}```"[:3000]}},
        ),
    )


def _links(findings: Sequence[Finding], context: GroupContext) -> str:
    """The dashboard and report links; a password in a link's URL is not posted."""
    links = []
    if context.grafana_url:
        first = findings[0]
        values = {"node": first.node, "pool": first.pool or "", "rule": first.rule}
        url = context.grafana_url.format(**{k: quote(v, safe="") for k, v in values.items()})
        links.append(f"<{redact_url(url)}|Grafana>")
    if context.report_url:
        links.append(f"<{redact_url(context.report_url)}|Report>")
    return " · ".join(links)


def _row(finding: Finding) -> str:
    if finding.subject:
        return finding.message
    where = finding.where
    who = finding.workload or (f"{finding.namespace}/{finding.pod}" if finding.pod else "-")
    value = format_value(finding.value, finding.unit)
    if finding.threshold is not None:
        value += f" (limit {format_value(finding.threshold, finding.unit)})"
    if finding.eta_s is not None:
        value += f", at this rate, full in {format_eta(finding.eta_s)}"
    return f"{where:<20} {who:<36} {value}"


def _short_model(model: str | None) -> str:
    if not model:
        return "GPU"
    for prefix in ("NVIDIA ", "NVIDIA-", "Tesla ", "Tesla-"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model
