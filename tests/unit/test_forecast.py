"""Time to OOM: the robust fit at its edges, and the forecast rule over recent samples."""

from __future__ import annotations

import numpy as np
import pytest

from gpuwatch.analysis.forecast import FitSettings, FitVerdict, fit_growth, theil_sen
from gpuwatch.analysis.rules.evaluate import evaluate, series_request
from gpuwatch.model.durations import format_eta
from gpuwatch.model.findings import Role
from gpuwatch.model.metrics import Aggregate, AggregateSpec, HistoryFrame, Signal
from gpuwatch.notify.compose import GroupContext, compose_group
from tests.builders import AT, context, device, finding, stats

MIN = 60.0
T0 = AT.timestamp() - 7200


def _minutes(n: int) -> np.ndarray:
    """``n`` per-minute sample times ending at AT."""
    return AT.timestamp() - MIN * np.arange(n - 1, -1, -1, dtype=np.float64)


class TestFit:
    def test_a_straight_ramp_worked_by_hand(self):
        # 0.60 rising 0.5 % a minute for 60 minutes: 0.90 now, 0.95 in 10 minutes.
        t = _minutes(61)
        v = 0.60 + 0.005 * np.arange(61)
        fit = fit_growth(t, v, 0.95)
        assert fit.verdict is FitVerdict.RISING
        assert fit.slope_per_s == pytest.approx(0.005 / 60)
        assert fit.rate_per_h == pytest.approx(0.30)
        assert fit.level == pytest.approx(0.90)
        assert fit.eta_s == pytest.approx(600.0)
        assert fit.fit_r2 == pytest.approx(1.0)

    def test_flat_gives_no_estimate(self):
        fit = fit_growth(_minutes(60), np.full(60, 0.9), 0.95)
        assert fit.verdict is FitVerdict.FLAT and fit.eta_s is None

    def test_falling_gives_no_estimate(self):
        fit = fit_growth(_minutes(60), 0.9 - 0.002 * np.arange(60), 0.95)
        assert fit.verdict is FitVerdict.FALLING and fit.eta_s is None

    def test_a_noisy_plateau_is_a_poor_fit_not_a_warning(self):
        rng = np.random.default_rng(7)
        v = 0.90 + 0.01 * rng.standard_normal(120) + 0.0001 * np.arange(120)
        fit = fit_growth(_minutes(120), v, 0.95)
        assert fit.verdict in (FitVerdict.POOR_FIT, FitVerdict.FLAT)
        assert fit.eta_s is None

    def test_noise_on_a_real_ramp_still_fits(self):
        rng = np.random.default_rng(7)
        v = 0.60 + 0.004 * np.arange(61) + 0.005 * rng.standard_normal(61)
        fit = fit_growth(_minutes(61), v, 0.95)
        assert fit.verdict is FitVerdict.RISING
        assert fit.eta_s == pytest.approx((0.95 - 0.84) / 0.004 * 60, rel=0.15)

    @pytest.mark.parametrize(("n", "step_s"), [(9, 60.0), (12, 30.0), (1, 60.0), (0, 60.0)])
    def test_too_few_samples_or_too_short_a_span(self, n, step_s):
        # 9 samples (below 10), or 12 samples 30 s apart (5.5 minutes, below 10).
        t = AT.timestamp() - step_s * np.arange(n - 1, -1, -1, dtype=np.float64)
        fit = fit_growth(t, 0.6 + 0.01 * np.arange(n), 0.95)
        assert fit.verdict is FitVerdict.TOO_FEW_SAMPLES and fit.eta_s is None

    def test_a_restart_mid_window_starts_the_fit_after_it(self):
        # Up to 98 % and OOM-killed 40 minutes ago; since then 0.55 rising 0.4 %/min.
        before = 0.70 + 0.004 * np.arange(80)
        after = 0.55 + 0.004 * np.arange(41)
        fit = fit_growth(_minutes(121), np.concatenate([before, after]), 0.95)
        assert fit.verdict is FitVerdict.RISING
        assert fit.samples == 41
        assert fit.segment_start_s == _minutes(121)[80]
        assert fit.level == pytest.approx(0.71)
        assert fit.eta_s == pytest.approx((0.95 - 0.71) / 0.004 * 60)

    def test_a_restart_leaving_too_little_after_it_gives_no_estimate(self):
        v = np.concatenate([0.60 + 0.004 * np.arange(110), 0.55 + 0.004 * np.arange(5)])
        assert fit_growth(_minutes(115), v, 0.95).verdict is FitVerdict.TOO_FEW_SAMPLES

    def test_missing_samples_are_skipped_not_zero(self):
        v = 0.60 + 0.005 * np.arange(61)
        v[20:30] = np.nan
        fit = fit_growth(_minutes(61), v, 0.95)
        assert fit.samples == 51 and fit.eta_s == pytest.approx(600.0)

    def test_already_at_the_threshold(self):
        fit = fit_growth(_minutes(30), np.full(30, 0.96), 0.95)
        assert fit.verdict is FitVerdict.REACHED and fit.eta_s == 0.0

    def test_one_spike_barely_moves_the_slope(self):
        t = _minutes(61)
        v = 0.60 + 0.002 * np.arange(61)
        v[55] = 0.99  # a spike that did not reach the threshold
        slope, _ = theil_sen(t, v)
        least_squares = np.polyfit(t - t[0], v, 1)[0]
        assert slope == pytest.approx(0.002 / 60, rel=0.05)
        assert least_squares > 1.15 * 0.002 / 60  # least squares follows it

    def test_steps_fit_as_their_average_rise(self):
        # +5.5 % every 30 minutes: 11 % an hour on average.
        t = _minutes(121)
        v = 0.58 + 0.055 * np.floor(np.arange(121) / 30)
        fit = fit_growth(t, v, 0.95)
        assert fit.verdict is FitVerdict.RISING
        assert fit.rate_per_h == pytest.approx(0.11, rel=0.10)

    def test_long_histories_are_thinned_not_refused(self):
        n = 600
        fit = fit_growth(
            AT.timestamp() - 10.0 * np.arange(n - 1, -1, -1), 0.5 + 1e-4 * np.arange(n), 0.95
        )
        assert fit.samples == n
        assert fit.slope_per_s == pytest.approx(1e-5)

    def test_settings_are_honoured(self):
        t = _minutes(61)
        v = 0.60 + 0.005 * np.arange(61)
        assert fit_growth(t, v, 0.95, FitSettings(min_samples=100)).eta_s is None
        assert fit_growth(t, v, 0.95, FitSettings(min_rise_per_h=0.5)).verdict is FitVerdict.FLAT


@pytest.mark.parametrize(
    ("eta_s", "text"), [(30, "~1 min"), (1080, "~18 min"), (7140, "~119 min"), (9000, "~2.5 h")]
)
def test_eta_text(eta_s, text):
    assert format_eta(eta_s) == text


def _frame(rows: list[np.ndarray], step_s: int = 60, n: int = 121) -> HistoryFrame:
    times = (AT.timestamp() - step_s * np.arange(n - 1, -1, -1)).astype(np.int64)
    spec = AggregateSpec(Signal.FB_USED_RATIO, Aggregate.MAX, step_s)
    return HistoryFrame(tuple(device(i) for i in range(len(rows))), times, {spec: np.array(rows)})


class TestForecastRule:
    def test_shipped_rule_and_what_it_asks_for(self, shipped_rules):
        rule = shipped_rules["gpu-oom-forecast"]
        assert rule.role is Role.OOM_FORECAST
        assert (rule.threshold, rule.horizon_s, rule.window_s, rule.step_s) == (
            0.95,
            1800,
            7200,
            60,
        )
        request = series_request([rule], AT)
        assert request is not None
        assert (request.end - request.start).total_seconds() == 7200 and request.step_s == 60
        assert series_request([shipped_rules["gpu-near-oom"]], AT) is None

    def test_warns_within_the_horizon_only_before_the_threshold(self, shipped_rules):
        k = np.arange(121)
        rows = [
            0.60 + 0.0025 * k,  # 0.90 now, +15 %/h: 95 % in 20 min
            0.50 + 0.0025 * k,  # 0.80 now: 95 % in 60 min, beyond 30
            np.minimum(0.70 + 0.0025 * k, 0.97),  # past 95 %: near-OOM's, not ours
            np.full(121, 0.93),  # flat just below
        ]
        devices = [device(i) for i in range(4)]
        result = evaluate(
            [shipped_rules["gpu-oom-forecast"]],
            stats(devices, {}),
            [context(d) for d in devices],
            series=_frame(rows),
        )
        (finding,) = result.findings
        assert finding.gpu_index == 0
        assert finding.eta_s == pytest.approx(1200.0)
        assert finding.fit_r2 == pytest.approx(1.0)
        assert finding.rate_per_h == pytest.approx(0.15)
        assert finding.value == pytest.approx(0.90)
        assert finding.since == AT  # a new prediction holds from now, not the window's start
        assert "at this rate, full (95%) in ~20 min" in finding.message
        data = finding.to_dict()
        assert data["eta_s"] == 1200.0 and data["fit_r2"] == 1.0

    def test_unallocated_and_unseen_gpus_are_not_forecast(self, shipped_rules):
        ramp = 0.60 + 0.0025 * np.arange(121)
        devices = [device(0), device(1), device(2)]
        contexts = [context(devices[0], allocated=False), context(devices[1]), context(device(2))]
        result = evaluate(
            [shipped_rules["gpu-oom-forecast"]],
            stats(devices, {}),
            contexts,
            series=_frame([ramp, ramp]),  # GPU 2 has no recent samples
        )
        assert [f.gpu_index for f in result.findings] == [1]

    def test_no_series_no_forecast(self, shipped_rules):
        result = evaluate(
            [shipped_rules["gpu-oom-forecast"]], stats([device(0)], {}), [context(device(0))]
        )
        assert result.findings == ()


class TestTimeToFull:
    """Near-OOM findings (already past 95 %) carry how long until the card is full."""

    def _near_oom(self, shipped_rules, rows, *, forecast=True):
        k = len(rows)
        devices = [device(i) for i in range(k)]
        peaks = [float(r[-1]) for r in rows]
        window = shipped_rules["gpu-near-oom"].window_s
        rules = [shipped_rules["gpu-near-oom"]]
        if forecast:
            rules.append(shipped_rules["gpu-oom-forecast"])
        return evaluate(
            rules,
            stats(
                devices,
                {
                    (Signal.FB_USED_RATIO, Aggregate.MAX, window): peaks,
                    (Signal.FB_USED_RATIO, Aggregate.COUNT, window): [window / 60.0] * k,
                },
            ),
            [context(d) for d in devices],
            series=_frame(rows),
        )

    def test_a_rising_card_is_full_when_its_line_reaches_100_percent(self, shipped_rules):
        k = np.arange(121)
        rising = 0.66 + 0.0025 * k  # 0.96 now, +15 %/h: 100 % in 16 min
        (near,) = [f for f in self._near_oom(shipped_rules, [rising]).findings
                   if f.rule == "gpu-near-oom"]  # fmt: skip
        assert near.eta_s == pytest.approx(960.0)
        assert near.fit_r2 == pytest.approx(1.0) and near.rate_per_h == pytest.approx(0.15)

    def test_a_flat_or_noisy_card_gets_no_estimate(self, shipped_rules):
        rng = np.random.default_rng(3)
        rows = [np.full(121, 0.97), 0.96 + 0.02 * rng.random(121)]
        found = [f for f in self._near_oom(shipped_rules, rows).findings
                 if f.rule == "gpu-near-oom"]  # fmt: skip
        assert len(found) == 2 and all(f.eta_s is None for f in found)

    def test_without_the_forecast_rule_there_are_no_samples_to_fit(self, shipped_rules):
        rising = 0.66 + 0.0025 * np.arange(121)
        (near,) = self._near_oom(shipped_rules, [rising], forecast=False).findings
        assert near.eta_s is None and near.fit_r2 is None


def test_the_slack_message_says_when_it_will_be_full():
    warned = finding(3, rule="gpu-oom-forecast", role=Role.OOM_FORECAST, eta_s=1080.0)
    context = GroupContext({"rule": "gpu-oom-forecast"}, "filling up", False, {})
    message = compose_group([warned], context, max_rows=10)
    assert "at this rate, full in ~18 min" in message.text
    assert message.title == "1 filling up A100-SXM4-80GB in gpu-training (team-a)"
