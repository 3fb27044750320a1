"""The exported PrometheusRule against the real promtool (Debian's package).

``promtool check rules`` accepts the ``spec``, and ``promtool test rules`` evaluates the
alerts over synthetic DCGM series, proving which GPUs fire: what gpuwatch's own
evaluation would find on the same samples. Series are sampled every 30 s (the default
``prometheus.scrape_interval_s``), so a 30-minute window holds 60 samples.

Annotations are left out of the behaviour tests (promtool compares them whole); one
test renders them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from gpuwatch.analysis.rules.loader import load_rules
from gpuwatch.analysis.rules.schema import Rule
from gpuwatch.config.settings import AttributionSettings, PrometheusSettings
from gpuwatch.export.prometheus_rule import prometheus_rule
from tests.builders import run_gpuwatch
from tests.integration.prometheus_server import binaries

_RULE = TypeAdapter(Rule)
UTIL = "DCGM_FI_DEV_GPU_UTIL"
GR = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED, FB_FREE, FB_RESERVED = (
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
)
TEMP, XID = "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS"
FULL = "x80"  # 81 samples: 0 s to 40 min every 30 s
EXPORTER_POD = "nvidia-dcgm-exporter-7xk2p"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    _, path = binaries()
    return subprocess.run(
        [path, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def rule(**fields: Any) -> Rule:
    return _RULE.validate_python(fields)


def threshold(rule_id: str, **fields: Any) -> Rule:
    base = {"kind": "threshold", "signal": "temp_c", "aggregate": "max", "op": ">"}
    return rule(id=rule_id, **{**base, "threshold": 85, "window": "5m", **fields})


def gpu(uuid: str, index: int = 0, node: str = "n1", **extra: str) -> dict[str, str]:
    """The labels a DCGM exporter series of this GPU carries (and an alert keeps)."""
    return {"UUID": uuid, "gpu": str(index), "Hostname": node, "modelName": "A100", **extra}


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def util(labels: dict[str, str], values: str) -> list[dict[str, str]]:
    """A GPU's utilization series, and the framebuffer series every exporter sends beside
    it (with the same labels: the evidence of which pod holds the GPU)."""
    framebuffer = re.sub(r"(?<![x\d.])\d+(\.\d+)?", "1000", values)
    return [series(UTIL, labels, values), series(FB_USED, labels, framebuffer)]


def held(labels: dict[str, str], pod: str, exported: bool = False) -> dict[str, str]:
    """The series labels while ``pod`` holds the GPU; behind a ServiceMonitor without
    honorLabels the workload's pod arrives as ``exported_pod``, the exporter's as ``pod``."""
    if exported:
        return {**labels, "exported_pod": pod, "exported_namespace": "ml", "pod": EXPORTER_POD}
    return {**labels, "pod": pod, "namespace": "ml"}


def fired(
    rule_id: str,
    labels: dict[str, str],
    severity: str = "warning",
    waste: bool = False,
    node_label: str = "Hostname",
) -> dict[str, Any]:
    expected = {**labels, "severity": severity, "gpuwatch_rule": rule_id}
    if node_label != "Hostname":
        expected[node_label] = expected.pop("Hostname")
    if waste:
        expected["gpuwatch_waste"] = "true"
    return {"exp_labels": expected}


def check(
    tmp_path: Path,
    rules: list[Rule],
    input_series: list[dict[str, str]],
    expected: dict[tuple[str, str], list[dict[str, Any]]],
    settings: PrometheusSettings | None = None,
    attribution: AttributionSettings | None = None,
    annotations: bool = False,
) -> None:
    """Run ``promtool test rules``: at each (eval_time, alertname), exactly ``expected``."""
    manifest = prometheus_rule(rules, settings or PrometheusSettings(), attribution=attribution)
    groups = manifest["spec"]["groups"]
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in a.items() if k != "annotations"} for a in g["rules"]]}
            for g in groups
        ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": alerts}
                    for (at, name), alerts in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    run = promtool("test", "rules", tmp_path / "test.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def shipped() -> dict[str, Rule]:
    return {r.id: r for r in load_rules()}


class TestCheckRules:
    @pytest.mark.parametrize("pod_labels", ["auto", "exported", "plain"])
    def test_shipped_rules_pass(self, tmp_path, pod_labels):
        settings = PrometheusSettings.model_validate({"labels": {"pod_labels": pod_labels}})
        manifest = prometheus_rule(load_rules(), settings)
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump({"groups": manifest["spec"]["groups"]}))
        run = promtool("check", "rules", path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS: 8 rules found" in run.stdout

    def test_every_kind_with_pools_for_and_custom_names_passes(self, tmp_path):
        rules = [
            threshold("hot", pools=["gpu-training", "a.b"], scope="allocated", **{"for": "5m"}),
            threshold("idle", signal="util_ratio", aggregate="avg", op="<=", threshold=0.1),
            threshold("fb", signal="fb_used_ratio", aggregate="last", scope="unallocated"),
            threshold("held", signal="pod_attached", aggregate="min", op="<", threshold=1),
            rule(id="free", kind="unallocated", window="30m", pools=["p"]),
            rule(id="xid", kind="xid", window="10m", ignore_codes=[43], pools=["p"]),
            rule(id="gap", kind="data_gap", window="10m", min_coverage=0, pools=["p"]),
        ]
        settings = PrometheusSettings.model_validate(
            {
                "scrape_interval_s": 15,
                "metrics": {"gpu_util": "gpu_util_pct", "xid": "xid_code"},
                "labels": {"uuid": "uuid", "node": "node_name", "mig_instance": "mig"},
            }
        )
        attribution = AttributionSettings(pool_label="example.com/pool")
        manifest = prometheus_rule(rules, settings, attribution=attribution)
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump({"groups": manifest["spec"]["groups"]}))
        run = promtool("check", "rules", path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS: 8 rules found" in run.stdout


class TestIdleAndUnallocated:
    """gpu-idle judges allocated GPUs, gpu-unallocated the others: never both."""

    @pytest.mark.parametrize(
        ("pod_labels", "exported"),
        [("auto", False), ("auto", True), ("plain", False), ("exported", True)],
    )
    def test_idle_busy_and_unheld(self, tmp_path, shipped, pod_labels, exported):
        idle, busy, free = gpu("GPU-a", 0), gpu("GPU-b", 1), gpu("GPU-c", 2)
        # Unheld behind a ServiceMonitor: only the exporter's own pod label.
        unheld = {**free, "pod": EXPORTER_POD} if exported else free
        check(
            tmp_path,
            [shipped["gpu-idle"], shipped["gpu-unallocated"]],
            [
                *util(held(idle, "train-0", exported), "5" + FULL),
                *util(held(busy, "train-1", exported), "50" + FULL),
                *util(unheld, "5" + FULL),
            ],
            {
                ("40m", "GpuwatchGpuIdle"): [fired("gpu-idle", idle, waste=True)],
                ("40m", "GpuwatchGpuUnallocated"): [fired("gpu-unallocated", free, waste=True)],
            },
            settings=PrometheusSettings.model_validate({"labels": {"pod_labels": pod_labels}}),
        )

    def test_gr_engine_active_wins_over_gpu_util(self, tmp_path, shipped):
        a, b = gpu("GPU-a", 0), gpu("GPU-b", 1)
        check(
            tmp_path,
            [shipped["gpu-idle"]],
            [
                # GPU_UTIL says 50 % busy; the graphics engine was active 5 % of the time.
                series(GR, held(a, "train-0"), "0.05" + FULL),
                *util(held(a, "train-0"), "50" + FULL),
                series(GR, held(b, "train-1"), "0.5" + FULL),
                *util(held(b, "train-1"), "5" + FULL),
            ],
            {("40m", "GpuwatchGpuIdle"): [fired("gpu-idle", a, waste=True)]},
        )

    def test_a_pod_label_anywhere_in_the_window_means_not_unallocated(self, tmp_path, shipped):
        released = gpu("GPU-a")
        check(
            tmp_path,
            [shipped["gpu-idle"], shipped["gpu-unallocated"]],
            [
                # Held until 20 min, then no pod: neither idle (now unheld) nor unallocated
                # (held within the last 30 min) at 40 min; unallocated at 51 min.
                *util(held(released, "train-0"), "5x40"),
                *util(released, "_x40 5x60"),
            ],
            {
                ("40m", "GpuwatchGpuIdle"): [],
                ("40m", "GpuwatchGpuUnallocated"): [],
                ("51m", "GpuwatchGpuUnallocated"): [fired("gpu-unallocated", released, waste=True)],
            },
        )

    @pytest.mark.parametrize(("missing", "judged"), [(50, True), (51, False)])
    def test_min_coverage_edge(self, tmp_path, shipped, missing, judged):
        # 30 of 60 samples in the window is coverage 0.5: judged; 29 is not.
        a = gpu("GPU-a")
        check(
            tmp_path,
            [shipped["gpu-idle"]],
            [*util(held(a, "train-0"), f"_x{missing} 5x{79 - missing}")],
            {("40m", "GpuwatchGpuIdle"): [fired("gpu-idle", a, waste=True)] if judged else []},
        )

    def test_mig_instances_are_judged_apart(self, tmp_path, shipped):
        idle = gpu("GPU-a", 0, GPU_I_ID="1", GPU_I_PROFILE="3g.40gb")
        busy = gpu("GPU-a", 0, GPU_I_ID="2", GPU_I_PROFILE="3g.40gb")
        check(
            tmp_path,
            [shipped["gpu-idle"]],
            [
                # As real exporters emit MIG instances: the graphics engine and the
                # framebuffer per GPU_I_ID, no GPU_UTIL.
                series(GR, held(idle, "infer-0"), "0.01" + FULL),
                series(FB_USED, held(idle, "infer-0"), "1000" + FULL),
                series(GR, held(busy, "infer-1"), "0.8" + FULL),
                series(FB_USED, held(busy, "infer-1"), "1000" + FULL),
            ],
            {
                ("40m", "GpuwatchGpuIdle"): [
                    fired("gpu-idle", {k: v for k, v in idle.items() if k != "GPU_I_PROFILE"},
                          waste=True)
                ]
            },
        )  # fmt: skip


class TestOomForecast:
    def test_rising_held_gpus_fire_before_the_threshold(self, tmp_path, shipped):
        rising, flat, full, slow, unheld = (
            gpu("GPU-a", 0), gpu("GPU-b", 1), gpu("GPU-c", 2), gpu("GPU-d", 3), gpu("GPU-e", 4),
        )  # fmt: skip
        ramp = [("60+0.25x160", "40-0.25x160")]  # +0.5 %/min: 90 % at 60 min, 105 % by 90
        check(
            tmp_path,
            [shipped["gpu-oom-forecast"]],
            [
                *(series(FB_USED, held(rising, "train-0"), u) for u, _ in ramp),
                *(series(FB_FREE, held(rising, "train-0"), f) for _, f in ramp),
                series(FB_USED, held(flat, "train-1"), "90x160"),
                series(FB_FREE, held(flat, "train-1"), "10x160"),
                series(FB_USED, held(full, "train-2"), "97x160"),
                series(FB_FREE, held(full, "train-2"), "3x160"),
                # +0.05 %/min: 53 % at 60 min, nowhere near 95 % in 30 minutes.
                series(FB_USED, held(slow, "train-3"), "50+0.025x160"),
                series(FB_FREE, held(slow, "train-3"), "50-0.025x160"),
                # Rising as fast, but no pod holds it: the rule's scope is allocated.
                *(series(FB_USED, unheld, u) for u, _ in ramp),
                *(series(FB_FREE, unheld, f) for _, f in ramp),
            ],
            {("60m", "GpuwatchGpuOomForecast"): [fired("gpu-oom-forecast", rising)]},
        )


class TestNearOom:
    def test_used_over_used_free_reserved(self, tmp_path, shipped):
        full, half, reserved_full, reserved_not = (
            gpu("GPU-a", 0), gpu("GPU-b", 1), gpu("GPU-c", 2), gpu("GPU-d", 3),
        )  # fmt: skip
        check(
            tmp_path,
            [shipped["gpu-near-oom"]],
            [
                series(FB_USED, full, "96" + FULL),
                series(FB_FREE, full, "4" + FULL),
                # FB_USED / FB_FREE = 1.0 would fire "above 0.95"; the ratio is 50 %.
                series(FB_USED, half, "50" + FULL),
                series(FB_FREE, half, "50" + FULL),
                # With RESERVED: 95.5 / 100 fires, 94 / 100 does not (94 / 96 would).
                series(FB_USED, reserved_full, "95.5" + FULL),
                series(FB_FREE, reserved_full, "0.5" + FULL),
                series(FB_RESERVED, reserved_full, "4" + FULL),
                series(FB_USED, reserved_not, "94" + FULL),
                series(FB_FREE, reserved_not, "2" + FULL),
                series(FB_RESERVED, reserved_not, "4" + FULL),
            ],
            {
                ("40m", "GpuwatchGpuNearOom"): [
                    fired("gpu-near-oom", full, "critical"),
                    fired("gpu-near-oom", reserved_full, "critical"),
                ]
            },
        )


class TestThresholdEdges:
    @pytest.mark.parametrize(("op", "fires"), [(">", False), (">=", True)])
    def test_max_exactly_at_the_limit(self, tmp_path, op, fires):
        a = gpu("GPU-a")
        check(
            tmp_path,
            [threshold("hot", op=op)],
            [series(TEMP, a, "85" + FULL)],
            {("40m", "GpuwatchHot"): [fired("hot", a)] if fires else []},
        )

    @pytest.mark.parametrize(("op", "fires"), [("<", False), ("<=", True)])
    def test_avg_exactly_at_the_limit(self, tmp_path, op, fires):
        # 0.125 and its sums are exact in binary: the mean is exactly the threshold.
        a = gpu("GPU-a")
        idle = threshold(
            "idle", signal="util_ratio", aggregate="avg", op=op, threshold=0.125, window="30m"
        )
        check(
            tmp_path,
            [idle],
            [series(GR, a, "0.125" + FULL)],
            {("40m", "GpuwatchIdle"): [fired("idle", a)] if fires else []},
        )

    def test_scope_any_judges_held_and_unheld(self, tmp_path, shipped):
        held_gpu, free = gpu("GPU-a", 0), gpu("GPU-b", 1)
        check(
            tmp_path,
            [shipped["gpu-overheat"]],
            [
                series(TEMP, held(held_gpu, "train-0"), "90" + FULL),
                series(TEMP, free, "86" + FULL),
            ],
            {
                ("40m", "GpuwatchGpuOverheat"): [
                    fired("gpu-overheat", held_gpu), fired("gpu-overheat", free),
                ]
            },
        )  # fmt: skip

    def test_for_holds_the_alert_back(self, tmp_path):
        a = gpu("GPU-a")
        check(
            tmp_path,
            [threshold("hot", **{"for": "5m"})],
            # Hot from 30 min: pending at 34 min, firing from 35.
            [series(TEMP, a, "60x59 90x40")],
            {
                ("29m", "GpuwatchHot"): [],
                ("34m", "GpuwatchHot"): [],
                ("36m", "GpuwatchHot"): [fired("hot", a)],
            },
        )


class TestPools:
    def test_first_set_node_label_is_the_pool(self, tmp_path):
        n1, n2, n3, n4 = (gpu(f"GPU-{i}", 0, f"n{i}") for i in range(1, 5))
        kube = "kube_node_labels"
        check(
            tmp_path,
            [threshold("hot", pools=["gpu-training"])],
            [
                *(series(TEMP, g, "90" + FULL) for g in (n1, n2, n3, n4)),
                # Two kube-state-metrics replicas: duplicates must not break the join.
                series(kube, {"node": "n1", "instance": "ksm-0", "label_pool": "gpu-training"},
                       "1" + FULL),
                series(kube, {"node": "n1", "instance": "ksm-1", "label_pool": "gpu-training"},
                       "1" + FULL),
                series(kube, {"node": "n2", "label_pool": "gpu-inference"}, "1" + FULL),
                # No pool label: the first fallback that is set.
                series(kube, {"node": "n3", "label_karpenter_sh_nodepool": "gpu-training"},
                       "1" + FULL),
                # The pool label wins over a fallback.
                series(kube, {"node": "n4", "label_pool": "gpu-inference",
                              "label_karpenter_sh_nodepool": "gpu-training"}, "1" + FULL),
            ],
            {("40m", "GpuwatchHot"): [fired("hot", n1), fired("hot", n3)]},
        )  # fmt: skip


class TestXid:
    def test_new_codes_fire_critical_ones_apart(self, tmp_path, shipped):
        hw, app, old, blip, ignored = (
            gpu("GPU-a", 0), gpu("GPU-b", 1), gpu("GPU-c", 2), gpu("GPU-d", 3), gpu("GPU-e", 4),
        )  # fmt: skip
        xid = rule(id="gpu-xid", kind="xid", window="10m", ignore_codes=[13])
        check(
            tmp_path,
            [xid],
            [
                series(XID, hw, "0x40 79x40"),  # XID 79 (fell off the bus) at 20.5 min
                series(XID, app, "0x40 43x40"),
                series(XID, old, "79" + FULL),  # not new: no change in any window
                series(XID, blip, "0x40 48 0x39"),  # 48 then back to 0: still counts
                series(XID, ignored, "0x40 13x40"),
            ],
            {
                ("25m", "GpuwatchGpuXid"): [fired("gpu-xid", app)],
                ("25m", "GpuwatchGpuXidCritical"): [
                    fired("gpu-xid", hw, "critical"), fired("gpu-xid", blip, "critical"),
                ],
                # Ten minutes on, nothing changed within the window: resolved.
                ("40m", "GpuwatchGpuXid"): [],
                ("40m", "GpuwatchGpuXidCritical"): [],
            },
        )  # fmt: skip

    def test_shipped_rule_fires_xid_79_as_critical(self, tmp_path, shipped):
        a = gpu("GPU-a")
        check(
            tmp_path,
            [shipped["gpu-xid"]],
            [series(XID, a, "0x40 79x40")],
            {
                ("25m", "GpuwatchGpuXid"): [],
                ("25m", "GpuwatchGpuXidCritical"): [fired("gpu-xid", a, "critical")],
            },
        )


class TestDataGap:
    def test_gaps_and_staleness(self, tmp_path, shipped):
        full, gap, stale, fresh, edge, under = (gpu(f"GPU-{c}", i) for i, c in enumerate("abcdef"))
        check(
            tmp_path,
            [shipped["data-gap"]],
            [
                series(UTIL, full, "1" + FULL),
                # A 10-minute gap: 40 of 60 samples in the last 30 min.
                series(UTIL, gap, "1x40 _x20 1x19"),
                # Stopped at 37 min: 54 of 60 samples (0.9, enough) but 3 min old.
                series(UTIL, stale, "1x74"),
                # Stopped at 38.5 min: 90 s old is not stale.
                series(UTIL, fresh, "1x77"),
                # Exactly 54 samples and fresh: coverage 0.9 is not below 0.9.
                series(UTIL, edge, "1x30 _x6 1x43"),
                # 53 samples: below.
                series(UTIL, under, "1x30 _x7 1x42"),
            ],
            {
                ("40m", "GpuwatchDataGap"): [
                    fired("data-gap", gap, "info"),
                    fired("data-gap", stale, "info"),
                    fired("data-gap", under, "info"),
                ]
            },
        )


class TestCustomNames:
    def test_metric_and_label_names_from_settings(self, tmp_path):
        settings = PrometheusSettings.model_validate(
            {
                "metrics": {
                    "gpu_util": "gpu_util_pct",
                    "gr_engine_active": "gr_active",
                    "fb_used": "fb_used_mib",
                },
                "labels": {"uuid": "uuid", "node": "node_name", "pod_labels": "plain"},
            }
        )
        idle = threshold(
            "idle", signal="util_ratio", aggregate="avg", op="<", threshold=0.1,
            window="30m", scope="allocated", pools=["gpu-training"],
        )  # fmt: skip
        a = {"uuid": "GPU-a", "gpu": "0", "node_name": "n1", "modelName": "A100"}
        b = {"uuid": "GPU-b", "gpu": "1", "node_name": "n2", "modelName": "A100"}
        check(
            tmp_path,
            [idle],
            [
                series("gpu_util_pct", {**a, "pod": "train-0"}, "5" + FULL),
                series("fb_used_mib", {**a, "pod": "train-0"}, "1000" + FULL),
                series("gpu_util_pct", {**b, "pod": "train-1"}, "5" + FULL),
                series("fb_used_mib", {**b, "pod": "train-1"}, "1000" + FULL),
                series("kube_node_labels", {"node": "n1", "label_gpu_pool": "gpu-training"},
                       "1" + FULL),
                series("kube_node_labels", {"node": "n2", "label_pool": "gpu-training"},
                       "1" + FULL),
            ],
            {("40m", "GpuwatchIdle"): [{"exp_labels": {**a, "severity": "warning",
                                                       "gpuwatch_rule": "idle"}}]},
            settings=settings,
            attribution=AttributionSettings(pool_label="gpuPool"),
        )  # fmt: skip


def test_annotations_render(tmp_path, shipped):
    a = gpu("GPU-a", 3, "gpu-node-7")
    expected = fired("gpu-idle", a, waste=True)
    expected["exp_annotations"] = {
        "summary": "idle: GPU 3 on node gpu-node-7",
        "description": " ".join(shipped["gpu-idle"].description.split())
        + "\n\nGPU 3 on node gpu-node-7 (A100, GPU-a): avg util_ratio 5% over 30m "
        "(threshold < 10%).",
        "value": "5%",
        "gpuwatch_note": "Allocation is the exporter's pod label on the GPU's newest sample; "
        "gpuwatch also infers the holders of GPUs the exporter does not label (shared GPUs, "
        "MIG slices under older exporters) from the Kubernetes API.",
    }
    check(
        tmp_path,
        [shipped["gpu-idle"]],
        [*util(held(a, "train-0"), "5" + FULL)],
        {("40m", "GpuwatchGpuIdle"): [expected]},
        annotations=True,
    )


class TestCommand:
    """``gpuwatch rules export`` as a user runs it."""

    def test_stdout_is_a_manifest_promtool_accepts(self, tmp_path):
        run = run_gpuwatch("rules", "export", "--format", "prometheus-rule", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("# Generated by `gpuwatch rules export")
        manifest = yaml.safe_load(run.stdout)
        assert manifest["kind"] == "PrometheusRule"
        assert manifest["metadata"]["name"] == "gpuwatch-rules"
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(manifest["spec"]))
        check_run = promtool("check", "rules", tmp_path / "rules.yaml")
        assert check_run.returncode == 0, check_run.stdout + check_run.stderr

    def test_out_file_name_labels_config_and_rule_paths(self, tmp_path):
        rules = tmp_path / "team.yaml"
        rules.write_text(
            "version: 1\nrules:\n"
            "  - {id: a100-idle, kind: threshold, signal: util_ratio, aggregate: avg,\n"
            "     op: '<', threshold: 0.2, window: 1h, pools: [gpu-training], for: 10m}\n"
            "  - {id: xid-off, kind: xid, window: 10m, enabled: false}\n"
        )
        config = tmp_path / "gpuwatch.yaml"
        config.write_text("prometheus:\n  metrics:\n    gpu_util: gpu_util_pct\n")
        out = tmp_path / "out" / "rule.yaml"
        out.parent.mkdir()
        run = run_gpuwatch(
            "rules", "export", "--format", "prometheus-rule", "--out", str(out),
            "--name", "gpu-alerts", "--namespace", "obs", "--label", "release=kps",
            "--config", str(config), str(rules), cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stdout == ""
        assert "1 alerts written to" in run.stderr
        manifest = yaml.safe_load(out.read_text())
        assert manifest["metadata"] == {
            "name": "gpu-alerts",
            "namespace": "obs",
            "labels": {"app.kubernetes.io/part-of": "gpuwatch", "release": "kps"},
        }
        (alert,) = manifest["spec"]["groups"][0]["rules"]
        assert alert["alert"] == "GpuwatchA100Idle" and alert["for"] == "10m"
        assert "gpu_util_pct" in alert["expr"] and "kube_node_labels" in alert["expr"]
        assert f"from {rules}." in out.read_text().splitlines()[0]

    def test_unknown_format_lists_the_accepted_ones(self, tmp_path):
        run = run_gpuwatch("rules", "export", "--format", "alertmanager", cwd=tmp_path)
        assert run.returncode == 2
        assert "'alertmanager' is not 'prometheus-rule'" in run.stderr

    def test_bad_rules_exit_2_with_file_and_line(self, tmp_path):
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: 1\nrules:\n  - id: x\n    kind: threshold\n    window: 5m\n")
        run = run_gpuwatch("rules", "export", "--format", "prometheus-rule", str(bad),
                           cwd=tmp_path)  # fmt: skip
        assert run.returncode == 2
        assert "gpuwatch: invalid rules:" in run.stderr
        assert f"{bad}:3: rule x: signal: Field required" in run.stderr
        assert run.stdout == ""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--label", "release"], "expected KEY=VALUE"),
            (["--name", "Gpu_Rules"], "Invalid value for '--name'"),
            (["--namespace", "a.b"], "Invalid value for '--namespace'"),
            (["--out", "missing/dir/rule.yaml"], "cannot write missing/dir/rule.yaml"),
        ],
    )
    def test_bad_options_exit_2(self, tmp_path, args, message):
        run = run_gpuwatch("rules", "export", "--format", "prometheus-rule", *args,
                           cwd=tmp_path)  # fmt: skip
        assert run.returncode == 2
        assert message in run.stderr
