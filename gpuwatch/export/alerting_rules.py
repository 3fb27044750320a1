"""gpuwatch's rules as Prometheus alerting rules: the PromQL, labels and annotations.

Each enabled rule becomes one alerting rule (two for an XID rule with critical codes)
whose PromQL computes what gpuwatch's own evaluation computes
(``gpuwatch.analysis.rules.evaluate``), from the same building blocks the Prometheus
source queries with (``gpuwatch.promql.QueryBuilder``): utilization preferring
``GR_ENGINE_ACTIVE`` over ``GPU_UTIL / 100``, the framebuffer ratio over
``USED + FREE + RESERVED``, windows left-open as ``(now - window, now]``, GPUs keyed by
``UUID`` and MIG instance, metric and label names from ``prometheus.metrics`` and
``prometheus.labels``.

Exact, kind by kind:

- ``threshold``: ``<aggregate>(signal over window) <op> threshold`` per GPU, judged only
  where the window's coverage (samples / (window / scrape interval)) reaches
  ``min_coverage``, computed as gpuwatch computes it so that the limits agree to the bit.
- ``unallocated``: no sample of the GPU in the window carries a pod label, coverage as
  above; the alert's value is the window's mean utilization.
- ``xid``: the XID metric changed within the window and its code (the last one, else the
  window's highest) is non-zero and not ignored. Critical codes become a second alert,
  ``<Name>Critical``, with ``severity: critical``: Alertmanager routes and inhibits on
  labels, and a label that changed with the code would restart the alert's ``for``.
- ``data_gap``: coverage below ``min_coverage``, or the newest sample older than
  ``stale_after``.
- ``pools``: a pool is a node label, so pool-restricted rules join kube-state-metrics'
  ``kube_node_labels`` on the node name: the pool is the first non-empty of
  ``attribution.pool_label`` and its fallbacks, as in gpuwatch. kube-state-metrics
  exports node labels only when allowed (``--metric-labels-allowlist=nodes=[...]``);
  without them a pool-restricted alert never fires.
- ``prometheus.labels.pod_labels: auto`` picks ``exported_pod`` when any GPU series
  carries it, else ``pod_name`` when any carries that, else ``pod``, fleet-wide, as
  the Prometheus source does.
- A pool-restricted alert joins ``kube_node_labels`` on the first of
  ``prometheus.labels.node`` (``Hostname``): where ``Hostname`` names the exporter pod,
  list the label that names the node first.
- ``for`` becomes the alerting rule's ``for``. Prometheus counts it in rule evaluations
  (every ``evaluation_interval``), gpuwatch in cycles; either way it is how long the
  condition has held.

Approximate, because PromQL sees the metrics and not the Kubernetes API (each such alert
says so in its ``gpuwatch_note`` annotation):

- Allocation (``scope``, ``unallocated``) is the exporter's pod label on the GPU's newest
  sample. gpuwatch also infers the holders of GPUs the exporter does not label (shared
  GPUs, MIG slices under older exporters) from the pods on the node, drops a label whose
  pod no longer runs, and does not call a GPU unallocated while a GPU pod on its node
  ended within the window.
- ``data_gap`` cannot see a GPU silent for the whole window: gpuwatch finds it through
  the node's advertised GPU count.
- Alerts name the GPU (node, index, model, UUID), not the pod holding it.

A rule with ``pools: []`` selects no GPU in gpuwatch and, like a disabled rule, is not
exported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, cast

from gpuwatch.config.settings import AttributionSettings, PrometheusSettings
from gpuwatch.export.forecast_alert import FORECAST_NOTE, ForecastLike, forecast_clauses
from gpuwatch.model.durations import format_duration
from gpuwatch.model.findings import Severity, format_value
from gpuwatch.model.metrics import (
    INVENTORY_MAX_S,
    SIGNAL_UNITS,
    Aggregate,
    AggregateSpec,
    Signal,
)
from gpuwatch.promql import POD_LABEL_SETS, QueryBuilder, QueryPart, Shard

# kube-state-metrics: one series per node, node labels as ``label_<sanitized name>``.
KUBE_NODE_LABELS = "kube_node_labels"
KUBE_NODE_NAME_LABEL = "node"
_WHOLE_FLEET = Shard()


class ExportedRule(Protocol):
    """What the export reads of every rule. ``gpuwatch.analysis.rules.schema``'s models
    satisfy it; the export and analysis are independent layers, hence a protocol."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def description(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def window_s(self) -> int: ...
    @property
    def for_s(self) -> int: ...
    @property
    def pools(self) -> list[str] | None: ...
    @property
    def waste(self) -> bool: ...


class _Threshold(ExportedRule, Protocol):
    @property
    def signal(self) -> Signal: ...
    @property
    def aggregate(self) -> str: ...
    @property
    def op(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def scope(self) -> str: ...
    @property
    def min_coverage(self) -> float: ...


class _Unallocated(ExportedRule, Protocol):
    @property
    def min_coverage(self) -> float: ...


class _Xid(ExportedRule, Protocol):
    @property
    def ignore_codes(self) -> list[int]: ...
    @property
    def critical_codes(self) -> list[int]: ...


class _DataGap(ExportedRule, Protocol):
    @property
    def min_coverage(self) -> float: ...
    @property
    def stale_after_s(self) -> int: ...


def alert_name(rule_id: str) -> str:
    """``gpu-idle-nights`` -> ``GpuwatchGpuIdleNights``."""
    return "Gpuwatch" + "".join(part.capitalize() for part in rule_id.split("-"))


def alerting_rules(
    rules: Sequence[ExportedRule],
    prometheus: PrometheusSettings,
    attribution: AttributionSettings,
) -> list[dict[str, Any]]:
    """The alerting rules for ``rules``: one per enabled rule (two for an XID rule with
    critical codes). A rule with ``pools: []`` selects no GPU and is left out, and so is
    a budget rule: spend needs the price book, the holders from the Kubernetes API and
    the month in the budgets' time zone, none of which PromQL has."""
    enabled = [r for r in rules if r.enabled and r.kind != "budget"]
    translator = _Translator(prometheus, attribution, enabled)
    exported = [r for r in enabled if r.pools != []]
    return [alert for rule in exported for alert in translator.alerts(rule)]


def kube_node_label(node_label: str) -> str:
    """The label kube-state-metrics gives node label ``node_label`` on kube_node_labels
    (``karpenter.sh/nodepool`` -> ``label_karpenter_sh_nodepool``)."""
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", node_label)
    return "label_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", sanitized).lower()


class _Translator:
    """Rules to alerting rules for one set of settings."""

    def __init__(
        self,
        prometheus: PrometheusSettings,
        attribution: AttributionSettings,
        rules: Sequence[ExportedRule],
    ) -> None:
        self.labels = prometheus.labels
        self.names = prometheus.metrics
        self.scrape_s = prometheus.scrape_interval_s
        self.pool_labels = [attribution.pool_label, *attribution.pool_label_fallbacks]
        self.key = f"{self.labels.uuid}, {self.labels.mig_instance}"
        identity = (*self.labels.node, self.labels.gpu, self.labels.model)
        self.builders = {
            mode: QueryBuilder(self.names, self.labels, self.scrape_s, pods.pod, identity=identity)
            for mode, pods in POD_LABEL_SETS.items()
        }
        self.pod_mode = self.labels.pod_labels
        # The Prometheus source decides ``auto`` from the series seen in its inventory
        # window: the longest window it aggregates over (a forecast's samples are a
        # range query, not one of them), at most INVENTORY_MAX_S.
        windows = [r.window_s for r in rules if r.kind != "forecast"]
        longest = max(windows, default=INVENTORY_MAX_S)
        self.inventory_s = min(longest, INVENTORY_MAX_S)

    def alerts(self, rule: ExportedRule) -> list[dict[str, Any]]:
        if rule.kind == "threshold":
            return [self._threshold(cast(_Threshold, rule))]
        if rule.kind == "unallocated":
            return [self._unallocated(cast(_Unallocated, rule))]
        if rule.kind == "xid":
            return self._xid(cast(_Xid, rule))
        if rule.kind == "data_gap":
            return [self._data_gap(cast(_DataGap, rule))]
        if rule.kind == "forecast":
            return [self._forecast(cast(ForecastLike, rule))]
        raise ValueError(f"rule {rule.id}: kind {rule.kind!r} has no PromQL translation")

    # -- kinds -----------------------------------------------------------------------

    def _threshold(self, rule: _Threshold) -> dict[str, Any]:
        w = rule.window_s
        value = self._aggregate(AggregateSpec(rule.signal, Aggregate(rule.aggregate), w))
        clauses = [
            f"{_group(value)} {rule.op} {_num(rule.threshold)}",
            self._on_key(self._covered(rule.signal, w, rule.min_coverage)),
        ]
        notes = []
        if rule.scope != "any":
            held = "1" if rule.scope == "allocated" else "0"
            attached = self._aggregate(AggregateSpec(Signal.POD_ATTACHED, Aggregate.LAST, w))
            clauses.append(self._on_key(f"{_group(attached)} == {held}"))
            notes.append(_ALLOCATION_NOTE)
        unit = SIGNAL_UNITS[Signal(rule.signal)]
        shown = _shown_value(unit)
        facts = (
            f"{rule.aggregate} {Signal(rule.signal).value} {shown} over "
            f"{format_duration(w)} (threshold {rule.op} {format_value(rule.threshold, unit)})."
        )
        return self._alert(rule, alert_name(rule.id), clauses, facts, shown, notes)

    def _unallocated(self, rule: _Unallocated) -> dict[str, Any]:
        w = rule.window_s
        util = self._aggregate(AggregateSpec(Signal.UTIL_RATIO, Aggregate.AVG, w))
        ever_held = self._aggregate(AggregateSpec(Signal.POD_ATTACHED, Aggregate.MAX, w))
        clauses = [
            _group(util),
            self._on_key(f"{_group(ever_held)} == 0"),
            self._on_key(self._covered(Signal.UTIL_RATIO, w, rule.min_coverage)),
        ]
        shown = _shown_value("ratio")
        facts = f"no pod held it for {format_duration(w)}; utilization averaged {shown}."
        notes = [_ALLOCATION_NOTE, _RELEASED_NOTE]
        return self._alert(rule, alert_name(rule.id), clauses, facts, shown, notes)

    def _xid(self, rule: _Xid) -> list[dict[str, Any]]:
        w = rule.window_s
        last = self._aggregate(AggregateSpec(Signal.XID, Aggregate.LAST, w))
        highest = self._aggregate(AggregateSpec(Signal.XID, Aggregate.MAX, w))
        changes = self._aggregate(AggregateSpec(Signal.XID, Aggregate.CHANGES, w))
        # The last code where it is non-zero, else the window's highest (an XID followed
        # by a reset to 0 still counts); only where the metric changed in the window.
        code = _group(f"{_group(last)} > 0\nor\n{_group(highest)} > 0")
        code += "\n" + self._on_key(f"{_group(changes)} >= 1")
        ignored = sorted(set(rule.ignore_codes))
        critical = sorted(set(rule.critical_codes) - set(ignored))
        if rule.severity is Severity.CRITICAL:
            critical = []  # nothing to raise
        shown = _shown_value("code")
        facts = f"reported XID {shown} within {format_duration(w)}."
        name = alert_name(rule.id)
        alerts = [self._alert(rule, name, [_excluding(code, [*ignored, *critical])], facts, shown)]
        if critical:
            # Codes in ``critical``: the code, less where it is none of them.
            only = f"{_group(code)}\nunless\n{_group(_excluding(code, critical))}"
            alerts.append(
                self._alert(
                    rule, name + "Critical", [only], facts, shown, severity=Severity.CRITICAL
                )
            )
        return alerts

    def _data_gap(self, rule: _DataGap) -> dict[str, Any]:
        w = rule.window_s
        coverage = _group(self._coverage(Signal.UTIL_RATIO, w))
        newest = self._aggregate(AggregateSpec(Signal.UTIL_RATIO, Aggregate.LAST_TS, w))
        # With min_coverage 0 only a GPU without a sample in the window is short of data,
        # and gpuwatch calls it stale: its newest sample is not in the window.
        minimum = rule.min_coverage
        short = f"{coverage} < {_num(minimum)}" if minimum > 0 else f"{coverage} == 0"
        stale = self._on_key(f"time() - {_group(newest)} > {rule.stale_after_s}")
        clauses = [_group(f"{short}\nor\n{coverage}\n{stale}")]
        shown = _shown_value("ratio")
        facts = (
            f"metrics cover {shown} of the last {format_duration(w)} (minimum "
            f"{format_value(minimum, 'ratio')}), or its newest sample is older than "
            f"{format_duration(rule.stale_after_s)}."
        )
        return self._alert(rule, alert_name(rule.id), clauses, facts, shown, [_SILENT_NOTE])

    def _forecast(self, rule: ForecastLike) -> dict[str, Any]:
        peak = self._aggregate(AggregateSpec(rule.signal, Aggregate.MAX, rule.step_s))
        (predicted, below), facts = forecast_clauses(rule, peak)
        clauses = [predicted, self._on_key(below)]
        if getattr(rule, "scope", "any") == "allocated":
            attached = self._aggregate(AggregateSpec(Signal.POD_ATTACHED, Aggregate.LAST, 300))
            clauses.append(self._on_key(f"{_group(attached)} == 1"))
        notes = [FORECAST_NOTE, _ALLOCATION_NOTE]
        shown = _shown_value(SIGNAL_UNITS[Signal(rule.signal)])
        name = alert_name(rule.id)
        return self._alert(cast(ExportedRule, rule), name, clauses, facts, shown, notes)

    # -- building blocks -------------------------------------------------------------

    def _aggregate(self, spec: AggregateSpec) -> str:
        """PromQL for one per-GPU aggregate, as the Prometheus source asks for it."""
        uuid = self.labels.uuid
        by_pod_label = spec.signal is Signal.POD_ATTACHED and spec.aggregate not in (
            Aggregate.COUNT,
            Aggregate.LAST_TS,
        )
        if not by_pod_label or self.pod_mode != "auto":
            builder = self.builders["plain" if self.pod_mode == "auto" else self.pod_mode]
            return _first_of(builder.parts(spec), uuid)
        # ``auto``: the first label set any GPU series carries, fleet-wide.
        window = _range(self.inventory_s)
        chosen: list[str] = []
        earlier: list[str] = []
        for mode, pods in POD_LABEL_SETS.items():
            held = f'{self.names.fb_used}{{{pods.pod}!=""}}'
            carried = f"count(last_over_time({held}[{window}]))"
            expr = _group(_first_of(self.builders[mode].parts(spec), uuid))
            if mode != "plain":
                expr += f"\nand on ()\n{carried}"
            for other in earlier:
                expr += f"\nunless on ()\n{other}"
            chosen.append(expr)
            earlier.append(carried)
        return "\nor\n".join(chosen)

    def _samples(self, signal: Signal, window_s: int) -> tuple[str, str]:
        """Samples of ``signal`` per GPU in the window, and how many a full window has."""
        count = self._aggregate(AggregateSpec(signal, Aggregate.COUNT, window_s))
        return _group(count), _num(max(window_s / self.scrape_s, 1.0))

    def _covered(self, signal: Signal, window_s: int, minimum: float) -> str:
        """GPUs whose window is covered at least ``minimum``. The ratio is computed as
        ``WindowStats.coverage_ratio`` does (no clamp needed: ``minimum`` <= 1), so that
        a GPU exactly at the limit is judged by both."""
        count, expected = self._samples(signal, window_s)
        return f"{count} / {expected} >= {_num(minimum)}"

    def _coverage(self, signal: Signal, window_s: int) -> str:
        """Fraction of the window with samples, ``WindowStats.coverage_ratio``, for
        every GPU the Prometheus source would see: one without a sample in this window
        but seen in its (longer) inventory window has coverage 0."""
        count, expected = self._samples(signal, window_s)
        coverage = f"clamp_max({count} / {expected}, 1)"
        if window_s >= self.inventory_s:
            return coverage
        seen, _ = self._samples(signal, self.inventory_s)
        return f"{coverage}\nor\n{seen} * 0"

    def _on_key(self, expr: str) -> str:
        return f"and on ({self.key})\n{_group(expr)}"

    def _pool_clause(self, pools: Sequence[str]) -> str:
        wanted = _quote("|".join(_regex_literal(p) for p in sorted(set(pools))))
        alternatives = []
        for i, label in enumerate(self.pool_labels):
            unset = [f'{kube_node_label(earlier)}=""' for earlier in self.pool_labels[:i]]
            matchers = ", ".join([*unset, f"{kube_node_label(label)}=~{wanted}"])
            alternatives.append(f"{KUBE_NODE_LABELS}{{{matchers}}}")
        nodes = "\nor\n".join(alternatives)
        node = self.labels.node[0]
        return (
            f"and on ({node})\nlabel_replace(\n{_indent(nodes)},\n"
            f'  "{node}", "$1", "{KUBE_NODE_NAME_LABEL}", "(.+)"\n)'
        )

    def _alert(
        self,
        rule: ExportedRule,
        name: str,
        clauses: Sequence[str],
        facts: str,
        shown: str,
        notes: Sequence[str] = (),
        severity: Severity | None = None,
    ) -> dict[str, Any]:
        """One alerting rule: ``clauses`` joined (each after the first starts with its
        set operator), the rule's pools added, labels and annotations."""
        notes = list(notes)
        if rule.pools is not None:
            clauses = [*clauses, self._pool_clause(rule.pools)]
            notes.append(
                "Pools come from kube-state-metrics' kube_node_labels (run it with "
                f"--metric-labels-allowlist=nodes=[{','.join(self.pool_labels)}]); the "
                "pool is the first of those node labels that is set, as in gpuwatch."
            )
        alert: dict[str, Any] = {"alert": name, "expr": "\n".join(clauses)}
        if rule.for_s:
            alert["for"] = format_duration(rule.for_s)
        labels = {"severity": (severity or rule.severity).value, "gpuwatch_rule": rule.id}
        if rule.waste:
            labels["gpuwatch_waste"] = "true"
        alert["labels"] = labels
        gpu, gpu_in_full = self._gpu_reference()
        description = f"{gpu_in_full}: {facts}"
        if rule.description:
            description = f"{_literal(rule.description.strip())}\n\n{description}"
        annotations = {
            "summary": f"{_literal(rule.title or rule.id)}: {gpu}",
            "description": description,
            "value": shown,
        }
        if notes:
            annotations["gpuwatch_note"] = " ".join(notes)
        alert["annotations"] = annotations
        return alert

    def _gpu_reference(self) -> tuple[str, str]:
        """``GPU 3 on node n1``, and the same with the model and UUID, as templates."""
        lab = self.labels
        mig = f"{{{{ with $labels.{lab.mig_instance} }}}} MIG instance {{{{ . }}}}{{{{ end }}}}"
        # Go templates' ``or`` gives the first non-empty: the first node label present.
        node = " ".join(f"$labels.{name}" for name in lab.node)
        node_text = f"{{{{ or {node} }}}}" if len(lab.node) > 1 else _label(lab.node[0])
        short = f"GPU {_label(lab.gpu)}{mig} on node {node_text}"
        return short, f"{short} ({_label(lab.model)}, {_label(lab.uuid)})"


_ALLOCATION_NOTE = (
    "Allocation is the exporter's pod label on the GPU's newest sample; gpuwatch also "
    "infers the holders of GPUs the exporter does not label (shared GPUs, MIG slices "
    "under older exporters) from the Kubernetes API."
)
_RELEASED_NOTE = (
    "gpuwatch also waits while a GPU pod on the node ended within the window; "
    "PromQL cannot see pods that ended."
)
_SILENT_NOTE = (
    "A GPU silent for the whole window is not in this alert (gpuwatch finds it through "
    "the node's advertised GPU count); alert on the exporter's `up` for that."
)


def _first_of(parts: Sequence[QueryPart], uuid_label: str) -> str:
    """Parts where the first that has a GPU wins (GR_ENGINE_ACTIVE, else GPU_UTIL)."""
    rendered = []
    for part in parts:
        text = part.render(_WHOLE_FLEET, uuid_label)
        rendered.append(text if part.scale == 1.0 else f"({text}) * {_num(part.scale)}")
    if len(rendered) == 1:
        return rendered[0]
    return "\nor\n".join(_group(text) for text in rendered)


def _excluding(code: str, codes: Sequence[int]) -> str:
    """``code`` where it is none of ``codes`` (comparison filters chain)."""
    if not codes:
        return code
    return _group(code) + "".join(f" != {c}" for c in codes)


def _range(window_s: int) -> str:
    # As QueryBuilder: (now - window, now], the same in Prometheus 2 and 3.
    return f"{window_s * 1000 - 1}ms"


def _group(expr: str) -> str:
    if "\n" not in expr:
        return f"({expr})"
    return f"(\n{_indent(expr)}\n)"


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.split("\n"))


def _num(value: float) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_literal(text: str) -> str:
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _label(name: str) -> str:
    return f"{{{{ $labels.{name} }}}}"


def _literal(text: str) -> str:
    """User text inside an annotation: ``{{`` would start a template action."""
    return text.replace("{{", '{{ "{{" }}')


def _shown_value(unit: str) -> str:
    if unit == "ratio":
        return "{{ $value | humanizePercentage }}"
    if unit in ("code", "flag"):
        return '{{ $value | printf "%.0f" }}'
    return f'{{{{ $value | printf "%.0f" }}}} {unit}'
