"""The result of one cycle: what was found, what it would save, what was done and said.

Serialised as one JSON document per cycle (``schema: gpuwatch.cycle/v1``). Every effect
of a cycle (an action, a message) is recorded here, delivered or not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpuwatch.model.actions import Action
from gpuwatch.model.approvals import ApprovalRecord
from gpuwatch.model.budgets import BudgetStatus
from gpuwatch.model.cost import CostReport
from gpuwatch.model.durations import rfc3339
from gpuwatch.model.findings import DataQualityNote, Finding, PendingGpuPod
from gpuwatch.model.savings import Saving, SavingExcluded, SavingsTotal

SCHEMA = "gpuwatch.cycle/v1"


@dataclass(frozen=True)
class Notification:
    """One message for people, as composed and as delivered (or not)."""

    group_key: str
    channel: str
    title: str
    text: str
    blocks: tuple[dict[str, Any], ...] = ()
    finding_keys: tuple[str, ...] = ()
    status: str = "composed"
    """``composed``, ``printed`` (console), ``sent``, or ``failed``."""
    error: str | None = None
    kind: str = "new"
    """Why it was sent: ``new``, ``update``, ``reminder``, ``resolved``, ``digest``,
    ``resolved-digest`` or ``actions``."""
    ts: str | None = None
    """The message id the chat service gave it, once delivered."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_key": self.group_key,
            "channel": self.channel,
            "title": self.title,
            "text": self.text,
            "blocks": list(self.blocks),
            "findings": len(self.finding_keys),
            "kind": self.kind,
            "status": self.status,
            "error": self.error,
            "ts": self.ts,
        }


@dataclass(frozen=True)
class AlertSummary:
    """Where the cycle's alerts stand beyond the messages it sent."""

    firing_groups: int = 0
    held_findings: int = 0
    """Findings not notified yet: their rule's ``for`` has not passed."""
    silenced_findings: int = 0
    waiting_groups: tuple[str, ...] = ()
    """Groups within their ``group_wait``."""
    undelivered_groups: tuple[str, ...] = ()
    """Groups whose latest message could not be delivered: retried next cycle."""
    deferred_groups: tuple[str, ...] = ()
    """Groups whose update waits for the next cycle (per-channel budget)."""
    outbox: int = 0
    """One-off messages (actions) still waiting for delivery."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "firing_groups": self.firing_groups,
            "held_findings": self.held_findings,
            "silenced_findings": self.silenced_findings,
            "waiting_groups": list(self.waiting_groups),
            "undelivered_groups": list(self.undelivered_groups),
            "deferred_groups": list(self.deferred_groups),
            "outbox": self.outbox,
        }


@dataclass(frozen=True)
class SourceInfo:
    metrics: str
    cluster: str
    gpus_in_metrics: int
    gpus_in_cluster: int
    nodes: int
    pods: int
    price_book: str = ""
    """Where the prices come from (the price book's path)."""
    prices_are_examples: bool = False
    """The price book is marked ``example: true``: every figure of money is an example."""


@dataclass(frozen=True)
class CycleResult:
    at: datetime
    cluster_name: str
    source: SourceInfo
    findings: tuple[Finding, ...] = ()
    data_quality: tuple[DataQualityNote, ...] = ()
    notifications: tuple[Notification, ...] = ()
    alerts: AlertSummary = field(default_factory=AlertSummary)
    cost: CostReport | None = None
    savings: tuple[Saving, ...] = ()
    savings_excluded: tuple[SavingExcluded, ...] = ()
    savings_totals: tuple[SavingsTotal, ...] = ()
    actions: tuple[Action, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()
    """This cycle's audit trail of approval in Slack: requests, decisions (who, when,
    which key, by which way), outcomes, snoozes."""
    """Planned, refused (with the guard that said no), done or failed."""
    pending_gpu_pods: tuple[PendingGpuPod, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
    errors: tuple[str, ...] = ()
    dry_run: bool = True
    duration_s: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        by_rule = Counter(f.rule for f in self.findings)
        return {
            "schema": SCHEMA,
            "at": rfc3339(self.at),
            "cluster": self.cluster_name,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "duration_s": round(self.duration_s, 3),
            "source": {
                "metrics": self.source.metrics,
                "cluster": self.source.cluster,
                "gpus_in_metrics": self.source.gpus_in_metrics,
                "gpus_in_cluster": self.source.gpus_in_cluster,
                "nodes": self.source.nodes,
                "pods": self.source.pods,
                "price_book": self.source.price_book,
                "prices_are_examples": self.source.prices_are_examples,
            },
            "summary": {"findings": len(self.findings), "by_rule": dict(sorted(by_rule.items()))},
            "findings": [f.to_dict() for f in self.findings],
            "cost": self.cost.to_dict() if self.cost is not None else None,
            "savings": [s.to_dict() for s in self.savings],
            "savings_total": [t.to_dict() for t in self.savings_totals],
            "savings_excluded": [e.to_dict() for e in self.savings_excluded],
            "actions": [a.to_dict() for a in self.actions],
            "approvals": [r.to_dict() for r in self.approvals],
            "data_quality": [n.to_dict() for n in self.data_quality],
            "pending_gpu_pods": [p.to_dict() for p in self.pending_gpu_pods],
            "budgets": [b.to_dict() for b in self.budgets],
            "notifications": [n.to_dict() for n in self.notifications],
            "alerts": self.alerts.to_dict(),
            "errors": list(self.errors),
            **self.extras,
        }
