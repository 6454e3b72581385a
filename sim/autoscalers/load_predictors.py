"""Load predictors of Dynamo's SLA planner: each forecasts the next adjustment interval's value of one traffic series
(the requests that arrive, their mean prompt and output lengths) from those observed so far (Dynamo's
core/load/predictors.py). Constant repeats the last value; Kalman is a local linear trend Kalman filter (level and
trend), which follows a rising or falling load where constant lags it an interval. Dynamo's ARIMA and Prophet
predictors (fitted time-series models from pmdarima and Prophet) are not modeled.

As in Dynamo, a series skips the leading zeros of an idle start, and a predictor with fewer than its minimum of
observations repeats the last one.
"""

from __future__ import annotations

import numpy as np

# Dynamo's SLAPlannerDefaults: kalman_q_level, kalman_q_trend, kalman_r, kalman_min_points.
KALMAN_Q_LEVEL = 1.0
KALMAN_Q_TREND = 0.1
KALMAN_R = 10.0
KALMAN_MIN_POINTS = 5
KALMAN_P0 = 1000.0  # the initial state covariance's scale (filterpy's identity times 1000, as Dynamo sets it)


class ConstantPredictor:
    """The next value is the last one observed."""

    name = "constant"

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        if value == 0.0 and not any(self.values):  # an idle start's leading zeros
            return
        self.values.append(float(value))

    def predict(self) -> float:
        return self.values[-1] if self.values else 0.0


class KalmanPredictor(ConstantPredictor):
    """A local linear trend: level_t = level_{t-1} + trend_{t-1} + w (variance KALMAN_Q_LEVEL), trend_t = trend_{t-1} +
    u (KALMAN_Q_TREND), each value the level plus noise (KALMAN_R); the forecast is the next level."""

    name = "kalman"
    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    H = np.array([[1.0, 0.0]])
    Q = np.diag([KALMAN_Q_LEVEL, KALMAN_Q_TREND])

    def __init__(self) -> None:
        super().__init__()
        self.state: np.ndarray | None = None  # [level, trend]
        self.covariance = np.eye(2) * KALMAN_P0

    def observe(self, value: float) -> None:
        seen = len(self.values)
        super().observe(value)
        if len(self.values) == seen:
            return
        if self.state is None:
            self.state = np.array([float(value), 0.0])
            return
        # Predict this step, then update it with the value observed.
        state, covariance = self.F @ self.state, self.F @ self.covariance @ self.F.T + self.Q
        residual = value - (self.H @ state)[0]
        variance = (self.H @ covariance @ self.H.T)[0, 0] + KALMAN_R
        gain = covariance @ self.H.T[:, 0] / variance
        self.state = state + gain * residual
        self.covariance = (np.eye(2) - np.outer(gain, self.H[0])) @ covariance

    def predict(self) -> float:
        if self.state is None or len(self.values) < KALMAN_MIN_POINTS:
            return super().predict()
        return float((self.F @ self.state)[0])


LOAD_PREDICTORS: dict[str, type[ConstantPredictor]] = {cls.name: cls for cls in (ConstantPredictor, KalmanPredictor)}
