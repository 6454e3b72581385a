"""The SLA planner's load predictors (sim/autoscalers/load_predictors.py): constant repeats the last value after an
idle start; the Kalman filter's first update by hand from its equations, a ramp followed and a constant kept."""

from __future__ import annotations

import pytest

from sim.autoscalers.load_predictors import KALMAN_MIN_POINTS, ConstantPredictor, KalmanPredictor


def test_constant_repeats_the_last_value_and_skips_an_idle_start():
    predictor = ConstantPredictor()
    assert predictor.predict() == 0.0
    for value in (0.0, 0.0, 5.0, 0.0, 7.0):
        predictor.observe(value)
    assert predictor.values == [5.0, 0.0, 7.0] and predictor.predict() == 7.0


def test_the_kalman_filter_s_first_update_by_hand():
    """From level 0 (covariance 1000 I): the prediction's covariance is F P F' + Q = [[2001, 1000], [1000, 1000.1]],
    the innovation's variance 2001 + 10, the gain [2001, 1000] / 2011; a reading of 100 moves the level to
    100 x 2001 / 2011 and the trend to 100 x 1000 / 2011."""
    predictor = KalmanPredictor()
    predictor.observe(0.0)  # an idle start's zero: skipped
    predictor.observe(1e-9)
    predictor.observe(100.0)
    level, trend = predictor.state
    assert level == pytest.approx(1e-9 + (100.0 - 1e-9) * 2001 / 2011)
    assert trend == pytest.approx((100.0 - 1e-9) * 1000 / 2011)


def test_the_kalman_filter_follows_a_ramp_that_constant_lags():
    """A load rising by 100 an interval: after 20 intervals the Kalman forecast is within 2% of the next value, where
    constant is a whole step behind; fewer than KALMAN_MIN_POINTS readings repeat the last one."""
    kalman, constant = KalmanPredictor(), ConstantPredictor()
    for step in range(1, 21):
        kalman.observe(100.0 * step)
        constant.observe(100.0 * step)
        if step < KALMAN_MIN_POINTS:
            assert kalman.predict() == 100.0 * step
    assert kalman.predict() == pytest.approx(2100.0, rel=0.02)
    assert constant.predict() == 2000.0


def test_the_kalman_filter_keeps_a_constant_load():
    kalman = KalmanPredictor()
    for _ in range(30):
        kalman.observe(500.0)
    assert kalman.predict() == pytest.approx(500.0)
