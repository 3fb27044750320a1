"""deploy/monitoring: the generated PrometheusRule is current, the Grafana dashboard
shows what it says with metrics that exist, and the prometheus-adapter rule is sound."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from gpuwatch.cli import cli
from gpuwatch.config.settings import PrometheusSettings
from gpuwatch.telemetry.metrics import CYCLE_GAUGES, SelfMetrics
from tests.deploy.conftest import MONITORING

EXPORT = ["rules", "export", "--format", "prometheus-rule"]
REGENERATE = "gpuwatch " + " ".join(EXPORT) + " --out deploy/monitoring/prometheusrule.yaml"


def test_prometheus_rule_is_generated_from_the_rules() -> None:
    result = CliRunner().invoke(cli, EXPORT, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    committed = (MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == result.stdout, (
        f"deploy/monitoring/prometheusrule.yaml is stale: run `{REGENERATE}`"
    )


def test_monitoring_renders(monitoring: list[dict[str, Any]]) -> None:
    kinds = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in monitoring}
    assert kinds == {
        ("monitoring.coreos.com/v1", "PrometheusRule", "gpuwatch-rules"),
        ("v1", "ConfigMap", "gpuwatch-dashboard"),
    }
    rule = next(o for o in monitoring if o["kind"] == "PrometheusRule")
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for alert in group["rules"]:
            assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
            assert alert["alert"] and alert["expr"]
    dashboard = next(o for o in monitoring if o["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [t["expr"] for t in p["targets"]]
        for p in dashboard["panels"]
        if p["type"] != "row"
    }


def _gpuwatch_metric_names() -> set[str]:
    registry = CollectorRegistry()
    SelfMetrics(registry)
    names = {spec.name for spec in CYCLE_GAUGES}
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_dashboard_panels() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "gpuwatch"
    assert "__inputs" not in dashboard  # loads from a ConfigMap, not through the import UI
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    exprs = _exprs(dashboard)
    names = PrometheusSettings().metrics
    wanted = {
        "GPU utilization by pool": [names.gpu_util, "kube_node_labels", "label_pool"],
        "GPU utilization by team": [names.gpu_util, "kube_namespace_labels", "label_team"],
        "GPU memory used ratio by pool": [names.fb_used, names.fb_free, "label_pool"],
        "GPU memory used ratio by team": [names.fb_used, names.fb_free, "label_team"],
        "Findings by rule": ["gpuwatch_findings", "by (rule)"],
        "Idle cost per hour by team": ["gpuwatch_idle_cost_per_hour", "team"],
        "Savings per month by kind": ["gpuwatch_savings_per_month", "kind"],
        "Cycle duration": ["gpuwatch_cycle_duration_seconds_bucket"],
        "Last success age": ["gpuwatch_last_success_timestamp_seconds"],
        "Notifications failed": ['gpuwatch_notifications_total{status="failed"}'],
    }
    assert set(exprs) == set(wanted)
    for title, fragments in wanted.items():
        joined = " ".join(exprs[title])
        for fragment in fragments:
            assert fragment in joined, (title, fragment)
    # Every gpuwatch metric the dashboard reads is one gpuwatch exports.
    used = {m for e in exprs.values() for m in re.findall(r"\bgpuwatch_[a-z_]+", " ".join(e))}
    assert used <= _gpuwatch_metric_names(), used - _gpuwatch_metric_names()
    for expr in (e for es in exprs.values() for e in es):
        assert expr.count("(") == expr.count(")"), expr


def test_prometheus_adapter_exposes_gpu_utilization() -> None:
    values = yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
    assert rule["name"]["as"] == "gpu_utilization"
    metric = PrometheusSettings().metrics.gpu_util
    assert rule["seriesQuery"].startswith(metric + "{")
    assert re.fullmatch(rule["name"]["matches"], metric)
    overrides = rule["resources"]["overrides"]
    assert overrides == {
        "exported_namespace": {"resource": "namespace"},
        "exported_pod": {"resource": "pod"},
    }
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
