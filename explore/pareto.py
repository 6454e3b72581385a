"""Pareto fronts and hypervolume over a sweep's objectives (all turned into minimization)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def objective_matrix(rows: list[dict[str, Any]], minimize: list[str], maximize: list[str]) -> np.ndarray:
    """One row per design point, one column per objective, signed so that smaller is better (NaN kept)."""
    columns = [[float(r.get(m, math.nan)) for r in rows] for m in minimize]
    columns += [[-float(r.get(m, math.nan)) for r in rows] for m in maximize]
    return np.array(columns, dtype=float).T.reshape(len(rows), len(columns))


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """True for the rows no other row dominates (smaller-or-equal everywhere, smaller somewhere); NaN rows never."""
    finite = np.all(np.isfinite(values), axis=1)
    mask = np.zeros(len(values), dtype=bool)
    candidates = np.flatnonzero(finite)
    # Sorting lexicographically means a point can only be dominated by points before it.
    order = candidates[np.lexsort(values[candidates].T[::-1])]
    front: list[int] = []
    for i in order:
        point = values[i]
        if not any(np.all(values[j] <= point) and np.any(values[j] < point) for j in front):
            if not any(np.array_equal(values[j], point) for j in front):
                front.append(i)
            mask[i] = True
    return mask


def hypervolume(front: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by the points (minimization) and bounded by the reference point; exact.

    Two objectives: a sweep over the sorted front. More: slice along the last objective and recurse.
    """
    points = front[np.all(front < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:
        points = points[np.argsort(points[:, 0])]
        volume, best_y = 0.0, reference[1]
        for x, y in points:
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    levels = np.unique(points[:, -1])
    volume = 0.0
    for lower, upper in zip(levels, np.append(levels[1:], reference[-1]), strict=True):
        slab = points[points[:, -1] <= lower][:, :-1]
        volume += hypervolume(slab, reference[:-1]) * (upper - lower)
    return float(volume)
