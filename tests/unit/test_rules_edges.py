"""Each shipped rule at its edges: thresholds, coverage, scope, window boundaries."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from gpuwatch.analysis.rules.evaluate import evaluate, required_specs
from gpuwatch.model.findings import Severity
from gpuwatch.model.metrics import Aggregate, Signal, fb_used_ratio
from tests.builders import AT, context, device, full_count, stats

A = Aggregate
S = Signal
IDLE_W, OOM_W, UNALLOC_W, XID_W, GAP_W = 1800, 300, 1800, 600, 1800


def _idle_stats(util: float, coverage: float = 1.0):
    return stats(
        [device(0)],
        {
            (S.UTIL_RATIO, A.AVG, IDLE_W): [util],
            (S.UTIL_RATIO, A.COUNT, IDLE_W): [full_count(IDLE_W) * coverage],
        },
    )


def _rules(shipped, *ids):
    return [shipped[i] for i in ids]


class TestGpuIdle:
    @pytest.mark.parametrize(
        ("util", "fires"), [(0.0999, True), (0.10, False), (0.1001, False), (0.0, True)]
    )
    def test_threshold_edge(self, shipped_rules, util, fires):
        result = evaluate(
            _rules(shipped_rules, "gpu-idle"), _idle_stats(util), [context(device(0))]
        )
        assert [f.rule for f in result.findings] == (["gpu-idle"] if fires else [])

    def test_finding_fields(self, shipped_rules):
        (finding,) = evaluate(
            _rules(shipped_rules, "gpu-idle"), _idle_stats(0.02), [context(device(0))]
        ).findings
        assert finding.value == pytest.approx(0.02)
        assert finding.threshold == 0.10
        assert finding.window_s == IDLE_W
        assert finding.workload == "PyTorchJob/team-a/train"
        assert finding.since == AT - timedelta(seconds=IDLE_W)
        assert "2%" in finding.message and "30m" in finding.message

    @pytest.mark.parametrize(("coverage", "judged"), [(0.5, True), (29 / 60, False), (0.0, False)])
    def test_coverage_minimum(self, shipped_rules, coverage, judged):
        result = evaluate(
            _rules(shipped_rules, "gpu-idle"), _idle_stats(0.01, coverage), [context(device(0))]
        )
        assert bool(result.findings) is judged
        if not judged:
            assert [n.kind for n in result.notes] == ["not_judged"]
            assert "gpu-idle" in result.notes[0].message

    def test_unallocated_idle_gpu_is_not_gpu_idle(self, shipped_rules):
        # An unallocated idle GPU: gpu-unallocated fires, gpu-idle must not.
        s = stats(
            [device(0)],
            {
                (S.UTIL_RATIO, A.AVG, IDLE_W): [0.0],
                (S.UTIL_RATIO, A.COUNT, IDLE_W): [full_count(IDLE_W)],
                (S.POD_ATTACHED, A.MAX, UNALLOC_W): [0.0],
            },
        )
        result = evaluate(
            _rules(shipped_rules, "gpu-idle", "gpu-unallocated"),
            s,
            [context(device(0), allocated=False)],
        )
        assert [f.rule for f in result.findings] == ["gpu-unallocated"]

    def test_allocated_idle_gpu_is_not_unallocated(self, shipped_rules):
        s = stats(
            [device(0, pod="train-worker-0")],
            {
                (S.UTIL_RATIO, A.AVG, IDLE_W): [0.0],
                (S.UTIL_RATIO, A.COUNT, IDLE_W): [full_count(IDLE_W)],
                (S.POD_ATTACHED, A.MAX, UNALLOC_W): [1.0],
            },
        )
        result = evaluate(
            _rules(shipped_rules, "gpu-idle", "gpu-unallocated"), s, [context(device(0))]
        )
        assert [f.rule for f in result.findings] == ["gpu-idle"]

    def test_since_carried_from_state(self, shipped_rules):
        first = evaluate(_rules(shipped_rules, "gpu-idle"), _idle_stats(0.0), [context(device(0))])
        key = first.findings[0].key
        earlier = AT - timedelta(hours=6)
        again = evaluate(
            _rules(shipped_rules, "gpu-idle"),
            _idle_stats(0.0),
            [context(device(0))],
            since_by_key={key: earlier},
        )
        assert again.findings[0].since == earlier


class TestNearOom:
    def _stats(self, ratio: float, coverage: float = 1.0):
        return stats(
            [device(0)],
            {
                (S.FB_USED_RATIO, A.MAX, OOM_W): [ratio],
                (S.FB_USED_RATIO, A.COUNT, OOM_W): [full_count(OOM_W) * coverage],
            },
        )

    @pytest.mark.parametrize(
        ("ratio", "fires"), [(0.9501, True), (0.95, False), (0.9499, False), (0.999, True)]
    )
    def test_threshold_edge(self, shipped_rules, ratio, fires):
        result = evaluate(
            _rules(shipped_rules, "gpu-near-oom"), self._stats(ratio), [context(device(0))]
        )
        assert bool(result.findings) is fires
        if fires:
            assert result.findings[0].severity is Severity.CRITICAL

    def test_sixty_percent_used_is_not_near_oom(self, shipped_rules):
        # 60 % of an 80 GB card used: FB_USED / FB_FREE is 1.5, far "above 0.95" by the
        # formula this rule replaces; the used ratio is 0.6.
        used, reserved = 49152.0, 625.0
        free = 81920.0 - used - reserved
        ratio = float(fb_used_ratio(used, free, reserved))
        assert used / free > 0.95
        assert ratio == pytest.approx(0.6)
        result = evaluate(
            _rules(shipped_rules, "gpu-near-oom"), self._stats(ratio), [context(device(0))]
        )
        assert result.findings == ()

    def test_applies_to_unallocated_gpus_too(self, shipped_rules):
        result = evaluate(
            _rules(shipped_rules, "gpu-near-oom"),
            self._stats(0.97),
            [context(device(0), allocated=False)],
        )
        assert len(result.findings) == 1

    def test_formula_without_reserved(self):
        assert float(fb_used_ratio(95.0, 5.0)) == pytest.approx(0.95)
        assert np.isnan(fb_used_ratio(0.0, 0.0, 0.0))


class TestUnallocated:
    def _stats(self, attached: float, coverage: float = 1.0, util: float = 0.0):
        return stats(
            [device(0)],
            {
                (S.POD_ATTACHED, A.MAX, UNALLOC_W): [attached],
                (S.UTIL_RATIO, A.AVG, UNALLOC_W): [util],
                (S.UTIL_RATIO, A.COUNT, UNALLOC_W): [full_count(UNALLOC_W) * coverage],
            },
        )

    def test_fires_for_a_gpu_nobody_held(self, shipped_rules):
        (finding,) = evaluate(
            _rules(shipped_rules, "gpu-unallocated"),
            self._stats(0.0),
            [context(device(0), allocated=False)],
        ).findings
        assert finding.pod is None and finding.workload is None
        assert finding.attribution == "none"

    def test_pod_label_inside_window_means_held(self, shipped_rules):
        # A pod held the GPU earlier in the window (its label is on some samples).
        result = evaluate(
            _rules(shipped_rules, "gpu-unallocated"),
            self._stats(1.0),
            [context(device(0), allocated=False)],
        )
        assert result.findings == ()

    def test_recently_released_gpu_waits(self, shipped_rules):
        result = evaluate(
            _rules(shipped_rules, "gpu-unallocated"),
            self._stats(0.0),
            [context(device(0), allocated=False, recently_released=True)],
        )
        assert result.findings == ()

    @pytest.mark.parametrize(("coverage", "judged"), [(0.5, True), (0.49, False)])
    def test_coverage(self, shipped_rules, coverage, judged):
        result = evaluate(
            _rules(shipped_rules, "gpu-unallocated"),
            self._stats(0.0, coverage),
            [context(device(0), allocated=False)],
        )
        assert bool(result.findings) is judged

    def test_no_data_is_not_unallocated(self, shipped_rules):
        s = stats(
            [device(0)],
            {
                (S.POD_ATTACHED, A.MAX, UNALLOC_W): [np.nan],
                (S.UTIL_RATIO, A.AVG, UNALLOC_W): [np.nan],
                (S.UTIL_RATIO, A.COUNT, UNALLOC_W): [0.0],
            },
        )
        result = evaluate(
            _rules(shipped_rules, "gpu-unallocated"), s, [context(device(0), allocated=False)]
        )
        assert result.findings == ()


class TestOverheat:
    @pytest.mark.parametrize(("temp", "fires"), [(85.0, False), (85.5, True), (84.0, False)])
    def test_threshold_edge(self, shipped_rules, temp, fires):
        s = stats(
            [device(0)],
            {(S.TEMP_C, A.MAX, 300): [temp], (S.TEMP_C, A.COUNT, 300): [5.0]},
        )
        result = evaluate(_rules(shipped_rules, "gpu-overheat"), s, [context(device(0))])
        assert bool(result.findings) is fires


class TestXid:
    def _stats(self, changes: float, highest: float, last: float):
        return stats(
            [device(0)],
            {
                (S.XID, A.CHANGES, XID_W): [changes],
                (S.XID, A.MAX, XID_W): [highest],
                (S.XID, A.LAST, XID_W): [last],
                (S.XID, A.COUNT, XID_W): [10.0],
            },
        )

    def test_new_hardware_xid_is_critical(self, shipped_rules):
        (finding,) = evaluate(
            _rules(shipped_rules, "gpu-xid"), self._stats(1, 79, 79), [context(device(0))]
        ).findings
        assert finding.value == 79
        assert finding.severity is Severity.CRITICAL

    def test_application_xid_keeps_rule_severity(self, shipped_rules):
        (finding,) = evaluate(
            _rules(shipped_rules, "gpu-xid"), self._stats(1, 13, 13), [context(device(0))]
        ).findings
        assert finding.severity is Severity.WARNING

    def test_old_xid_that_did_not_change_is_not_new(self, shipped_rules):
        result = evaluate(
            _rules(shipped_rules, "gpu-xid"), self._stats(0, 79, 79), [context(device(0))]
        )
        assert result.findings == ()

    def test_error_that_cleared_inside_window_still_fires(self, shipped_rules):
        # 0 -> 48 -> 0 within the window: last is 0, the maximum tells the code.
        (finding,) = evaluate(
            _rules(shipped_rules, "gpu-xid"), self._stats(2, 48, 0), [context(device(0))]
        ).findings
        assert finding.value == 48

    def test_ignored_code(self, shipped_rules):
        rule = shipped_rules["gpu-xid"].model_copy(update={"ignore_codes": [13]})
        assert evaluate([rule], self._stats(1, 13, 13), [context(device(0))]).findings == ()


class TestDataGap:
    def _stats(self, coverage: float, age_s: float):
        return stats(
            [device(0)],
            {
                (S.UTIL_RATIO, A.COUNT, GAP_W): [full_count(GAP_W) * coverage],
                (S.UTIL_RATIO, A.LAST_TS, GAP_W): [AT.timestamp() - age_s],
            },
        )

    @pytest.mark.parametrize(
        ("coverage", "age_s", "fires"),
        [(0.9, 60, False), (26 / 30, 60, True), (1.0, 120, False), (1.0, 121, True)],
    )
    def test_coverage_and_staleness(self, shipped_rules, coverage, age_s, fires):
        result = evaluate(
            _rules(shipped_rules, "data-gap"), self._stats(coverage, age_s), [context(device(0))]
        )
        assert bool(result.findings) is fires

    def test_stale_since_is_last_sample(self, shipped_rules):
        (finding,) = evaluate(
            _rules(shipped_rules, "data-gap"), self._stats(0.5, 600), [context(device(0))]
        ).findings
        assert finding.since == AT - timedelta(seconds=600)

    def test_gpu_the_node_has_but_metrics_lack(self, shipped_rules):
        s = stats([], {})
        (finding,) = evaluate(_rules(shipped_rules, "data-gap"), s, [context(None)]).findings
        assert finding.gpu_uuid is None
        assert finding.node == "node-a"
        assert finding.value == 0.0


def test_required_specs_cover_every_rule(shipped_rules):
    specs = required_specs(list(shipped_rules.values()))
    assert {s.signal for s in specs} >= {
        S.UTIL_RATIO,
        S.FB_USED_RATIO,
        S.TEMP_C,
        S.XID,
        S.POD_ATTACHED,
    }


def test_disabled_rule_is_skipped(shipped_rules):
    rule = shipped_rules["gpu-idle"].model_copy(update={"enabled": False})
    assert evaluate([rule], _idle_stats(0.0), [context(device(0))]).findings == ()
    assert required_specs([rule]) == frozenset()


def test_empty_cluster(shipped_rules):
    result = evaluate(list(shipped_rules.values()), stats([], {}), [])
    assert result.findings == () and result.notes == ()
