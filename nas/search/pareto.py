"""Non-dominated sets and hypervolume. Objectives are given with a direction; internally everything is minimised."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _to_min(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    pts = np.asarray(points, dtype=float).reshape(len(points), -1).copy()
    for j, mx in enumerate(maximize):
        if mx:
            pts[:, j] = -pts[:, j]
    return pts


def pareto_front(points, maximize: Sequence[bool]) -> list[int]:
    """Indices of non-dominated points (duplicates of a front point are all kept). Two objectives: O(n log n) sort and
    sweep; more: O(n^2) pairwise."""
    if len(points) == 0:
        return []
    pts = _to_min(points, maximize)
    n, d = pts.shape
    if d == 2:
        # sort by the first objective (ties by the second); within a group of equal first objective only the points
        # with the group's best second survive, and only if that beats every group before it (vectorised sweep)
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        xs, ys = pts[order, 0], pts[order, 1]
        starts = np.r_[True, xs[1:] != xs[:-1]]
        gid = np.cumsum(starts) - 1
        gmins = ys[starts]
        before = np.r_[np.inf, np.minimum.accumulate(gmins)[:-1]]
        mask = (gmins < before)[gid] & (ys == gmins[gid])
        return sorted(int(k) for k in order[mask])
    keep = []
    for i in range(n):
        dominated = np.any(np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1))
        if not dominated:
            keep.append(i)
    return keep


def dominates(a, b, maximize: Sequence[bool]) -> bool:
    pa, pb = _to_min(np.array([a, b]), maximize)
    return bool(np.all(pa <= pb) and np.any(pa < pb))


def hypervolume(points, reference, maximize: Sequence[bool]) -> float:
    """Volume dominated by `points` and bounded by `reference` (points not better than the reference count for nothing).
    Exact: a sweep in 2-D, slicing along the first objective in 3-D and beyond."""
    if len(points) == 0:
        return 0.0
    pts = _to_min(points, maximize)
    ref = _to_min(np.array([reference]), maximize)[0]
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(_hv_min(pts, ref))


def _hv_min(pts: np.ndarray, ref: np.ndarray) -> float:
    d = pts.shape[1]
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        p = pts[np.argsort(pts[:, 0])]
        vol, best_y = 0.0, ref[1]
        for x, y in p:
            if y < best_y:
                vol += (ref[0] - x) * (best_y - y)
                best_y = y
        return vol
    # slice along the last objective: between consecutive levels the dominated cross-section is constant
    p = pts[np.argsort(pts[:, -1])]
    vol = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        if upper > p[i, -1]:
            vol += _hv_min(p[: i + 1, :-1], ref[:-1]) * (upper - p[i, -1])
    return vol


def non_dominated_sort(points, maximize: Sequence[bool]) -> list[list[int]]:
    """Fronts F1, F2, ... (lists of indices): F1 is the non-dominated set, F2 is non-dominated once F1 is removed, ..."""
    remaining = list(range(len(points)))
    pts = np.asarray(points, dtype=float).reshape(len(points), -1) if len(points) else np.zeros((0, len(maximize)))
    fronts: list[list[int]] = []
    while remaining:
        sub = pareto_front(pts[remaining], maximize)
        front = [remaining[i] for i in sub]
        fronts.append(front)
        chosen = set(front)
        remaining = [i for i in remaining if i not in chosen]
    return fronts


def crowding_distance(points, front: list[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each index in `front`: boundary points get infinity; interior points the sum over
    objectives of the normalised gap between their neighbours."""
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: float("inf") for i in front}
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    for j in range(pts.shape[1]):
        order = sorted(front, key=lambda i: pts[i, j])
        lo, hi = pts[order[0], j], pts[order[-1], j]
        dist[order[0]] = dist[order[-1]] = float("inf")
        if hi == lo:
            continue
        for a, b, c in zip(order, order[1:], order[2:]):
            dist[b] += (pts[c, j] - pts[a, j]) / (hi - lo)
    return dist
