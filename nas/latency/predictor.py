"""A latency model fitted on the job's own measurements: per-layer additive terms over shape features.

latency(L, H, A, F) ≈ c0 + c1·H + L·(c2·H² + c3·H·F + c4·H + c5·A + c6·F + c7)

All coefficients are non-negative (a larger shape never predicts faster) and fitted by non-negative least squares on
relative error (rows weighted by 1 / measured latency), so small and large shapes count alike. It orders measurements
and skips candidates that cannot meet a latency constraint; a point that reaches a front is always measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from nas.students.shape import Shape

FEATURES = ("const", "hidden", "L*hidden^2", "L*hidden*ffn", "L*hidden", "L*heads", "L*ffn", "L")


def features(shape: Shape) -> np.ndarray:
    L, H, A, F = shape.layers, shape.hidden, shape.heads, shape.ffn
    return np.array([1.0, H / 1e3, L * H * H / 1e6, L * H * F / 1e6, L * H / 1e3, L * A / 1e1, L * F / 1e3, L],
                    dtype=float)


@dataclass
class LatencyPredictor:
    coef: np.ndarray
    n_fit: int
    fit_mape: float

    def predict(self, shape: Shape) -> float:
        return float(features(shape) @ self.coef)

    def predict_many(self, shapes: list[Shape]) -> np.ndarray:
        return np.array([self.predict(s) for s in shapes])

    def terms(self) -> dict[str, float]:
        return dict(zip(FEATURES, map(float, self.coef)))


def fit_predictor(shapes: list[Shape], latency_ms: list[float]) -> LatencyPredictor:
    """Fit on measured shapes; needs at least as many distinct measurements as there are coefficients... or fewer terms
    will be zero. Raises ValueError on fewer than 3 rows or a non-positive latency."""
    y = np.asarray(latency_ms, dtype=float)
    if len(shapes) != len(y) or len(y) < 3:
        raise ValueError(f"need at least 3 measured shapes to fit a latency predictor, got {len(y)}")
    if (y <= 0).any() or not np.isfinite(y).all():
        raise ValueError("latencies must be positive and finite")
    X = np.stack([features(s) for s in shapes])
    w = 1.0 / y
    coef, _ = nnls(X * w[:, None], y * w)
    pred = X @ coef
    return LatencyPredictor(coef, len(y), float(np.mean(np.abs(pred - y) / y)))


def mape(pred, actual) -> float:
    pred, actual = np.asarray(pred, dtype=float), np.asarray(actual, dtype=float)
    return float(np.mean(np.abs(pred - actual) / actual))


def feasible(predictor: LatencyPredictor | None, shape: Shape, limit_ms: float | None, margin: float = 1.15) -> bool:
    """False only when the predictor is confident the shape misses the limit (prediction above limit × margin)."""
    if predictor is None or limit_ms is None:
        return True
    return predictor.predict(shape) <= limit_ms * margin


__all__ = ["FEATURES", "features", "LatencyPredictor", "fit_predictor", "mape", "feasible"]
