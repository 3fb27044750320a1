"""The PrometheusRule export: the manifest's structure for the shipped and custom rules.

Behaviour (which GPUs fire) is proven against the real promtool in
tests/integration/test_rule_export_promtool.py; these tests pin the structure and the
PromQL text that settings change.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.config.settings import AttributionSettings, PrometheusSettings
from gpuwatch.export.alerting_rules import alert_name, kube_node_label
from gpuwatch.export.prometheus_rule import (
    check_object_name,
    manifest_yaml,
    parse_label,
    prometheus_rule,
)

_RULE = TypeAdapter(Rule)
SHIPPED_ALERTS = [
    ("GpuwatchGpuIdle", "gpu-idle", "warning"),
    ("GpuwatchGpuNearOom", "gpu-near-oom", "critical"),
    ("GpuwatchGpuUnallocated", "gpu-unallocated", "warning"),
    ("GpuwatchGpuOverheat", "gpu-overheat", "warning"),
    ("GpuwatchGpuXid", "gpu-xid", "warning"),
    ("GpuwatchGpuXidCritical", "gpu-xid", "critical"),
    ("GpuwatchDataGap", "data-gap", "info"),
    ("GpuwatchGpuOomForecast", "gpu-oom-forecast", "warning"),
]


def rule(**fields: Any) -> Rule:
    return _RULE.validate_python(fields)


def hot(**fields: Any) -> Rule:
    """A threshold rule on temperature, with ``fields`` overriding its defaults."""
    base = {
        "id": "hot",
        "kind": "threshold",
        "signal": "temp_c",
        "aggregate": "max",
        "op": ">",
        "threshold": 85,
        "window": "5m",
    }
    return rule(**{**base, **fields})


def alerts(rules: list[Rule], settings: PrometheusSettings | None = None, **kw: Any) -> list:
    manifest = prometheus_rule(rules, settings or PrometheusSettings(), **kw)
    (group,) = manifest["spec"]["groups"]
    return group["rules"]


def by_name(rules: list[Rule], **kw: Any) -> dict[str, dict[str, Any]]:
    return {a["alert"]: a for a in alerts(rules, **kw)}


def with_labels(**labels: Any) -> PrometheusSettings:
    return PrometheusSettings.model_validate({"labels": labels})


class TestShippedRules:
    def test_manifest_envelope(self):
        manifest = prometheus_rule(load_rules(), PrometheusSettings())
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        assert manifest["kind"] == "PrometheusRule"
        assert manifest["metadata"] == {
            "name": "gpuwatch-rules",
            "namespace": "monitoring",
            "labels": {"app.kubernetes.io/part-of": "gpuwatch"},
        }
        assert [g["name"] for g in manifest["spec"]["groups"]] == ["gpuwatch"]

    def test_one_alert_per_rule_and_a_critical_twin_for_xid(self):
        found = [
            (a["alert"], a["labels"]["gpuwatch_rule"], a["labels"]["severity"])
            for a in alerts(list(load_rules()))
        ]
        assert found == SHIPPED_ALERTS

    def test_every_alert_has_summary_description_and_value(self):
        for alert in alerts(list(load_rules())):
            annotations = alert["annotations"]
            assert {"summary", "description", "value"} <= set(annotations)
            assert (
                "{{ or $labels.Hostname $labels.hostname $labels.node $labels.kubernetes_node }}"
                in (annotations["summary"])
            )
            assert "{{ $labels.UUID }}" in annotations["description"]
            assert "for" not in alert  # the shipped rules fire at once

    def test_waste_rules_are_labelled(self):
        waste = {
            a["alert"] for a in alerts(list(load_rules())) if a["labels"].get("gpuwatch_waste")
        }
        assert waste == {"GpuwatchGpuIdle", "GpuwatchGpuUnallocated"}

    def test_idle_expression(self):
        idle = by_name(list(load_rules()))["GpuwatchGpuIdle"]
        expr = idle["expr"]
        # The window aggregate, GR_ENGINE_ACTIVE first, GPU_UTIL in percent scaled, and
        # GPU_UTIL never for a MIG instance (real exporters emit none, or a constant 0).
        assert "sum_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[1799999ms])" in expr
        assert 'count_over_time(DCGM_FI_DEV_GPU_UTIL{GPU_I_ID=""}[1799999ms]))) * 0.01)' in expr
        assert ") < 0.1\nand on (UUID, GPU_I_ID)" in expr
        # Coverage as gpuwatch computes it: samples / (window / scrape interval).
        assert ") / 60 >= 0.5\n)" in expr
        # Allocated: the newest framebuffer sample (every device reports one, MIG
        # instances too) has a pod label: exported, legacy or plain (auto).
        assert 'DCGM_FI_DEV_FB_USED{exported_pod!=""}[29999ms]' in expr
        assert 'DCGM_FI_DEV_FB_USED{pod_name!=""}[29999ms]' in expr
        assert 'DCGM_FI_DEV_FB_USED{pod!=""}[29999ms]' in expr
        assert expr.rstrip().endswith(") == 1\n)")
        assert "kube_node_labels" not in expr
        assert "Kubernetes API" in idle["annotations"]["gpuwatch_note"]

    def test_near_oom_divides_by_used_free_and_reserved(self):
        expr = by_name(list(load_rules()))["GpuwatchGpuNearOom"]["expr"]
        assert "max_over_time(DCGM_FI_DEV_FB_USED[299999ms])" in expr
        assert "last_over_time(DCGM_FI_DEV_FB_FREE[299999ms])" in expr
        assert "last_over_time(DCGM_FI_DEV_FB_RESERVED[299999ms]) or" in expr
        assert ") > 0.95\n" in expr
        assert "pod" not in expr  # scope any

    def test_xid_alerts_split_codes_between_them(self):
        named = by_name(list(load_rules()))
        codes = " != 48 != 63 != 64 != 74 != 79 != 92 != 94 != 95"
        assert named["GpuwatchGpuXid"]["expr"].endswith(codes)
        critical = named["GpuwatchGpuXidCritical"]["expr"]
        assert "\nunless\n" in critical and critical.rstrip(")\n ").endswith(codes)
        assert "changes(DCGM_FI_DEV_XID_ERRORS[599999ms])" in critical

    def test_data_gap_checks_coverage_and_staleness(self):
        gap = by_name(list(load_rules()))["GpuwatchDataGap"]
        assert ") / 60, 1)\n  ) < 0.9\n  or\n" in gap["expr"]
        assert "time() - (" in gap["expr"] and ") > 120\n" in gap["expr"]
        assert "silent" in gap["annotations"]["gpuwatch_note"]


class TestCustomRules:
    def test_disabled_rules_and_empty_pools_are_omitted(self):
        names = [
            a["alert"]
            for a in alerts([hot(), hot(id="off", enabled=False), hot(id="none", pools=[])])
        ]
        assert names == ["GpuwatchHot"]

    def test_for_becomes_the_alert_for(self):
        assert by_name([hot(**{"for": "1h30m"})])["GpuwatchHot"]["for"] == "1h30m"
        assert "for" not in by_name([hot(**{"for": 0})])["GpuwatchHot"]

    @pytest.mark.parametrize(
        ("scope", "clause"), [("allocated", ") == 1\n)"), ("unallocated", ") == 0\n)")]
    )
    def test_scope_restricts_by_the_pod_label(self, scope, clause):
        expr = by_name([hot(scope=scope)])["GpuwatchHot"]["expr"]
        assert expr.endswith(clause)
        assert 'exported_pod!=""' in expr

    def test_scope_any_reads_no_pod_label(self):
        alert = by_name([hot(scope="any")])["GpuwatchHot"]
        assert "pod" not in alert["expr"]
        assert "gpuwatch_note" not in alert["annotations"]

    def test_pools_join_kube_node_labels_first_set_label_wins(self):
        attribution = AttributionSettings(
            pool_label="example.com/gpuPool", pool_label_fallbacks=["karpenter.sh/nodepool"]
        )
        alert = by_name([hot(pools=["gpu.a", "b"])], attribution=attribution)["GpuwatchHot"]
        expr = alert["expr"]
        assert 'kube_node_labels{label_example_com_gpu_pool=~"b|gpu\\\\.a"}' in expr
        assert (
            'kube_node_labels{label_example_com_gpu_pool="", '
            'label_karpenter_sh_nodepool=~"b|gpu\\\\.a"}'
        ) in expr
        assert "and on (Hostname)\nlabel_replace(\n" in expr
        assert '"Hostname", "$1", "node", "(.+)"' in expr
        note = alert["annotations"]["gpuwatch_note"]
        assert "--metric-labels-allowlist=nodes=[example.com/gpuPool,karpenter.sh/nodepool]" in (
            note
        )

    def test_pools_apply_to_every_kind(self):
        rules = [
            rule(id="u", kind="unallocated", window="30m", pools=["p"]),
            rule(id="x", kind="xid", window="10m", pools=["p"]),
            rule(id="g", kind="data_gap", window="30m", pools=["p"]),
        ]
        for alert in alerts(rules):
            assert 'label_pool=~"p"' in alert["expr"], alert["alert"]

    def test_xid_ignored_codes_never_fire_and_are_not_critical(self):
        named = by_name([rule(id="x", kind="xid", window="10m", ignore_codes=[43, 79])])
        assert named["GpuwatchX"]["expr"].endswith(
            " != 43 != 79 != 48 != 63 != 64 != 74 != 92 != 94 != 95"
        )
        assert (
            named["GpuwatchXCritical"]["expr"]
            .rstrip(")\n ")
            .endswith(" != 48 != 63 != 64 != 74 != 92 != 94 != 95")
        )

    def test_xid_critical_rule_needs_no_twin(self):
        named = by_name([rule(id="x", kind="xid", window="10m", severity="critical")])
        assert list(named) == ["GpuwatchX"]
        assert "!=" not in named["GpuwatchX"]["expr"]

    def test_xid_without_critical_codes_needs_no_twin(self):
        named = by_name([rule(id="x", kind="xid", window="10m", critical_codes=[])])
        assert list(named) == ["GpuwatchX"]

    def test_data_gap_shorter_than_the_inventory_counts_unseen_gpus_as_zero(self):
        rules = [hot(window="1h"), rule(id="gap", kind="data_gap", window="10m")]
        expr = by_name(rules)["GpuwatchGap"]["expr"]
        assert "[599999ms]))" in expr and "[3599999ms]))" in expr and ") * 0" in expr

    def test_data_gap_with_zero_min_coverage_fires_on_no_sample(self):
        expr = by_name([rule(id="gap", kind="data_gap", window="10m", min_coverage=0)])[
            "GpuwatchGap"
        ]["expr"]
        assert ") == 0\n" in expr and "< 0\n" not in expr

    def test_thresholds_and_coverage_are_printed_exactly(self):
        expr = by_name([hot(threshold=85.25, min_coverage=0.9, op="<=")])["GpuwatchHot"]["expr"]
        assert ") <= 85.25\n" in expr
        assert ") / 10 >= 0.9)" in expr

    def test_scrape_interval_sets_the_expected_samples_and_subquery_step(self):
        settings = PrometheusSettings(scrape_interval_s=15)
        expr = by_name([hot(scope="allocated")], settings=settings)["GpuwatchHot"]["expr"]
        assert ") / 20 >= 0.5)" in expr
        assert "[299999ms:15s]" in expr and "[14999ms]" in expr

    def test_custom_metric_and_label_names(self):
        settings = PrometheusSettings.model_validate(
            {
                "metrics": {
                    "gpu_util": "gpu_util_pct",
                    "gr_engine_active": "gr_active",
                    "fb_used": "fb_used_mib",
                },
                "labels": {
                    "uuid": "uuid",
                    "node": "node_name",
                    "gpu": "index",
                    "model": "model",
                    "mig_instance": "mig_id",
                    "pod_labels": "plain",
                },
            }
        )
        idle = by_name(
            [rule(id="idle", kind="threshold", signal="util_ratio", aggregate="avg", op="<",
                  threshold=0.1, window="30m", scope="allocated", pools=["p"])],
            settings=settings,
        )["GpuwatchIdle"]  # fmt: skip
        expr = idle["expr"]
        assert "DCGM_FI" not in expr and "UUID" not in expr and "Hostname" not in expr
        assert "sum by (uuid, mig_id, node_name, index, model) (" in expr
        assert "sum_over_time(gr_active[" in expr and 'gpu_util_pct{mig_id=""}' in expr
        assert 'fb_used_mib{pod!=""}' in expr
        assert "and on (uuid, mig_id)" in expr and "and on (node_name)" in expr
        assert "exported_pod" not in expr
        summary = idle["annotations"]["summary"]
        assert summary == (
            "idle: GPU {{ $labels.index }}{{ with $labels.mig_id }} MIG instance {{ . }}"
            "{{ end }} on node {{ $labels.node_name }}"
        )

    @pytest.mark.parametrize(
        ("mode", "present", "absent"),
        [
            ("exported", ['exported_pod!=""'], ['{pod!=""}', "and on ()"]),
            ("plain", ['{pod!=""}'], ["exported_pod", "and on ()"]),
            ("auto", ['{exported_pod!=""}', '{pod!=""}', "and on ()", "unless on ()"], []),
        ],
    )
    def test_pod_label_mode(self, mode, present, absent):
        expr = by_name([hot(scope="allocated")], settings=with_labels(pod_labels=mode))[
            "GpuwatchHot"
        ]["expr"]
        for text in present:
            assert text in expr
        for text in absent:
            assert text not in expr

    def test_annotations_escape_template_braces_in_user_text(self):
        alert = by_name([hot(title="{{ x }}", description="uses {{ braces }}")])["GpuwatchHot"]
        assert alert["annotations"]["summary"].startswith('{{ "{{" }} x }}: GPU')
        assert alert["annotations"]["description"].startswith('uses {{ "{{" }} braces }}\n\n')

    def test_threshold_annotations_show_value_and_threshold_with_units(self):
        named = by_name(
            [
                hot(),
                hot(id="fb", signal="fb_used_mib", threshold=70000),
                hot(id="busy", signal="util_ratio", threshold=0.9),
            ]
        )
        hot_alert = named["GpuwatchHot"]["annotations"]
        assert hot_alert["value"] == '{{ $value | printf "%.0f" }} C'
        assert hot_alert["description"].endswith(
            ': max temp_c {{ $value | printf "%.0f" }} C over 5m (threshold > 85 C).'
        )
        assert named["GpuwatchFb"]["annotations"]["value"].endswith(" MiB")
        assert "(threshold > 90%)" in named["GpuwatchBusy"]["annotations"]["description"]


class TestNamesAndLabels:
    @pytest.mark.parametrize(
        ("rule_id", "name"),
        [
            ("gpu-idle", "GpuwatchGpuIdle"),
            ("data-gap", "GpuwatchDataGap"),
            ("a100-near-oom", "GpuwatchA100NearOom"),
            ("x", "GpuwatchX"),
        ],
    )
    def test_alert_name(self, rule_id, name):
        assert alert_name(rule_id) == name

    @pytest.mark.parametrize(
        ("node_label", "series_label"),
        [
            ("pool", "label_pool"),
            ("karpenter.sh/nodepool", "label_karpenter_sh_nodepool"),
            ("alibabacloud.com/nodepool-id", "label_alibabacloud_com_nodepool_id"),
            ("cloud.google.com/gke-nodepool", "label_cloud_google_com_gke_nodepool"),
            ("example.com/gpuPool", "label_example_com_gpu_pool"),
        ],
    )
    def test_kube_state_metrics_label_names(self, node_label, series_label):
        assert kube_node_label(node_label) == series_label

    def test_manifest_labels_merge_with_the_default(self):
        manifest = prometheus_rule(
            [hot()], PrometheusSettings(), name="gpu.rules", namespace="obs",
            labels={"release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "x"},
        )  # fmt: skip
        assert manifest["metadata"] == {
            "name": "gpu.rules",
            "namespace": "obs",
            "labels": {"app.kubernetes.io/part-of": "x", "release": "kube-prometheus-stack"},
        }

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": "Bad_Name"}, "name 'Bad_Name'"),
            ({"namespace": "a.b"}, "namespace 'a.b'"),
            ({"labels": {"bad key": "x"}}, "label 'bad key'"),
            ({"labels": {"k": "-x"}}, "label k='-x'"),
            ({"labels": {"UPPER.example.com/k": "v"}}, "prefix before '/'"),
        ],
    )
    def test_kubernetes_would_refuse(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            prometheus_rule([hot()], PrometheusSettings(), **kwargs)

    def test_parse_label(self):
        assert parse_label("release=kps") == ("release", "kps")
        assert parse_label("team=") == ("team", "")
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            parse_label("release")

    def test_object_name_limits(self):
        check_object_name("a" * 63, "namespace", subdomain=False)
        with pytest.raises(ValueError, match="at most 63"):
            check_object_name("a" * 64, "namespace", subdomain=False)


class TestYaml:
    def test_round_trips_with_expressions_as_literal_blocks(self):
        manifest = prometheus_rule(list(load_rules()), PrometheusSettings())
        text = manifest_yaml(manifest, ["rules/gpu.yaml"])
        assert text.startswith(
            "# Generated by `gpuwatch rules export --format prometheus-rule` from rules/gpu.yaml."
        )
        assert yaml.safe_load(text) == manifest
        assert "      expr: |-\n        (\n" in text
        assert "kube_node_labels" not in text

    def test_header_names_kube_state_metrics_when_pools_are_used(self):
        text = manifest_yaml(prometheus_rule([hot(pools=["p"])], PrometheusSettings()))
        assert "# Pool-restricted alerts join kube-state-metrics' kube_node_labels" in text
