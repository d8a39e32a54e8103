"""pareto_front and hypervolume against brute-force references written independently here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.search.pareto import dominates, hypervolume, pareto_front


def as_min(points, maximize) -> np.ndarray:
    pts = np.array(points, dtype=float).reshape(len(points), len(maximize))
    return pts * np.where(np.array(maximize), -1.0, 1.0)


def brute_front(points, maximize) -> list[int]:
    """O(n^2): i is on the front unless some j is no worse everywhere and strictly better somewhere."""
    p = as_min(points, maximize)
    out = []
    for i in range(len(p)):
        if not any(np.all(p[j] <= p[i]) and np.any(p[j] < p[i]) for j in range(len(p)) if j != i):
            out.append(i)
    return out


def hv_inclusion_exclusion(points, reference, maximize) -> float:
    """Union of the boxes [p, ref] by inclusion-exclusion over every subset (small sets only)."""
    p = as_min(points, maximize)
    r = as_min([reference], maximize)[0]
    p = p[np.all(p < r, axis=1)]
    total = 0.0
    for k in range(1, len(p) + 1):
        for sub in itertools.combinations(range(len(p)), k):
            corner = p[list(sub)].max(axis=0)  # the intersection of boxes starts at the worst corner
            total += (-1) ** (k + 1) * float(np.prod(np.clip(r - corner, 0, None)))
    return total


def hv_grid(points, reference, maximize) -> float:
    """Integer coordinates: count the unit cells between the points and the reference that some point dominates."""
    p = as_min(points, maximize).astype(int)
    r = as_min([reference], maximize)[0].astype(int)
    lo = np.minimum(p.min(axis=0), r) if len(p) else r
    axes = [np.arange(lo[d], r[d]) for d in range(len(r))]
    if any(len(a) == 0 for a in axes):
        return 0.0
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(r))
    covered = np.zeros(len(cells), dtype=bool)
    for q in p:
        covered |= np.all(cells >= q, axis=1)
    return float(covered.sum())


DIRECTIONS = {
    2: [[False, False], [True, False], [False, True], [True, True]],
    3: [[False, False, False], [True, False, False], [True, False, True], [True, True, True]],
    4: [[True, False, False, False], [False, True, False, True]],
}


# -- pareto_front --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3, 4])
def test_front_matches_brute_force_on_integer_points_with_ties(dim):
    rng = np.random.default_rng(dim)
    for trial in range(150):
        n = int(rng.integers(1, 40))
        pts = rng.integers(0, 6, size=(n, dim))  # few distinct values: many ties and exact duplicates
        if trial % 5 == 0:
            pts = np.concatenate([pts, pts[: max(1, n // 3)]])  # explicit duplicates
        for mx in DIRECTIONS[dim]:
            assert pareto_front(pts.tolist(), mx) == brute_front(pts, mx), (pts.tolist(), mx)


@pytest.mark.parametrize("dim", [2, 3])
def test_front_matches_brute_force_on_float_points(dim):
    rng = np.random.default_rng(100 + dim)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        pts = rng.normal(size=(n, dim))
        if dim == 2:
            pts[:, 1] = -pts[:, 0] + 0.3 * pts[:, 1]  # a trade-off, so fronts are long
        for mx in DIRECTIONS[dim]:
            assert pareto_front(pts, mx) == brute_front(pts, mx)


def test_front_small_cases():
    assert pareto_front([], [True, False]) == []
    assert pareto_front([[0.5, 3.0]], [True, False]) == [0]
    # accuracy up, latency down
    pts = [[0.90, 10.0], [0.85, 5.0], [0.80, 6.0], [0.90, 12.0], [0.95, 20.0], [0.85, 5.0]]
    assert pareto_front(pts, [True, False]) == [0, 1, 4, 5]
    # the same points, but now both minimised: the lowest accuracy and the fastest (twice) trade off
    assert pareto_front(pts, [False, False]) == [1, 2, 5]
    # both maximised: the most accurate and the slowest
    assert pareto_front(pts, [True, True]) == [4]
    # equal first objective: only the best second objective of that group
    assert pareto_front([[1, 5], [1, 3], [1, 3], [2, 1]], [False, False]) == [1, 2, 3]
    # all identical: all kept
    assert pareto_front([[1, 1, 1]] * 4, [False, True, False]) == [0, 1, 2, 3]


def test_front_indices_refer_to_the_input_order():
    rng = np.random.default_rng(7)
    pts = rng.random((30, 2))
    front = set(pareto_front(pts, [True, False]))
    perm = rng.permutation(30)
    front_perm = {int(perm[i]) for i in pareto_front(pts[perm], [True, False])}
    assert front_perm == front


def test_dominates():
    assert dominates([0.9, 5], [0.8, 6], [True, False])
    assert not dominates([0.8, 6], [0.9, 5], [True, False])
    assert not dominates([0.9, 5], [0.9, 5], [True, False])  # equal points do not dominate
    assert dominates([0.9, 5], [0.9, 6], [True, False])
    assert not dominates([0.9, 7], [0.8, 6], [True, False])  # a trade-off
    assert dominates([1, 1, 1], [1, 2, 1], [False, False, False])
    assert dominates([1, 2, 1], [1, 1, 1], [False, True, False])


def test_every_point_off_the_front_is_dominated_by_a_front_point():
    rng = np.random.default_rng(3)
    pts = rng.integers(0, 8, size=(80, 3)).astype(float)
    mx = [True, False, False]
    front = pareto_front(pts, mx)
    for i in set(range(80)) - set(front):
        assert any(dominates(pts[j], pts[i], mx) for j in front)
    for i, j in itertools.combinations(front, 2):
        assert not dominates(pts[i], pts[j], mx) and not dominates(pts[j], pts[i], mx)


# -- hypervolume ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_matches_grid_counting(dim):
    rng = np.random.default_rng(10 + dim)
    for _ in range(120):
        n = int(rng.integers(1, 15))
        pts = rng.integers(0, 9, size=(n, dim))
        for mx in DIRECTIONS[dim]:
            # the reference sits on the "bad" side of most points, but some points are worse than it
            ref = [0 if m else 7 for m in mx]
            got = hypervolume(pts.tolist(), ref, mx)
            assert got == pytest.approx(hv_grid(pts, ref, mx), abs=1e-9), (pts.tolist(), ref, mx)


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(dim):
    rng = np.random.default_rng(20 + dim)
    for _ in range(60):
        n = int(rng.integers(1, 8))
        pts = rng.random((n, dim))
        mx = DIRECTIONS[dim][int(rng.integers(len(DIRECTIONS[dim])))]
        ref = [0.1 if m else 0.9 for m in mx]
        assert hypervolume(pts, ref, mx) == pytest.approx(hv_inclusion_exclusion(pts, ref, mx), rel=1e-9, abs=1e-12)


def test_hypervolume_known_values():
    # accuracy up, latency down, reference (accuracy 0, teacher latency 10)
    assert hypervolume([[0.8, 5.0]], [0.0, 10.0], [True, False]) == pytest.approx(0.8 * 5.0)
    assert hypervolume([[0.8, 5.0], [0.6, 2.0]], [0.0, 10.0], [True, False]) == pytest.approx(0.8 * 5 + 0.6 * 3)
    # both minimised, 2-D staircase
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4], [False, False]) == pytest.approx(3 + 2 + 1)
    # 3-D: a unit-spaced cube corner
    assert hypervolume([[0, 0, 0]], [2, 3, 4], [False, False, False]) == pytest.approx(24)
    assert hypervolume([[1, 0, 0], [0, 1, 1]], [2, 2, 2], [False] * 3) == pytest.approx(4 + 2 - 1)
    assert hypervolume([], [1, 1], [False, False]) == 0.0


def test_points_not_better_than_the_reference_contribute_nothing():
    mx = [True, False]
    ref = [0.5, 10.0]
    base = [[0.8, 4.0], [0.7, 2.0]]
    hv = hypervolume(base, ref, mx)
    worse = [[0.4, 1.0],    # accuracy below the reference
             [0.9, 12.0],   # slower than the reference
             [0.5, 3.0],    # exactly on the reference accuracy
             [0.95, 10.0],  # exactly on the reference latency
             [0.1, 50.0]]   # worse everywhere
    assert hypervolume(base + worse, ref, mx) == pytest.approx(hv)
    assert hypervolume(worse, ref, mx) == 0.0
    # a point that only *looks* better in one objective is clipped by the other: still nothing
    assert hypervolume([[2.0, 10.5]], ref, mx) == 0.0


def test_hypervolume_invariants():
    rng = np.random.default_rng(5)
    for _ in range(40):
        pts = rng.random((20, 3))
        mx = [True, False, False]
        ref = [0.0, 1.0, 1.0]
        hv = hypervolume(pts, ref, mx)
        front = pareto_front(pts, mx)
        # only the front matters, the order does not, duplicates add nothing
        assert hypervolume(pts[front], ref, mx) == pytest.approx(hv)
        assert hypervolume(pts[rng.permutation(20)], ref, mx) == pytest.approx(hv)
        assert hypervolume(np.concatenate([pts, pts[:5]]), ref, mx) == pytest.approx(hv)
        # adding a point never lowers it; it is bounded by the box between the ideal point and the reference
        extra = rng.random((1, 3))
        assert hypervolume(np.concatenate([pts, extra]), ref, mx) >= hv - 1e-12
        assert 0 < hv <= 1.0
        # flipping a direction together with the data and the reference gives the same volume
        flipped = pts.copy()
        flipped[:, 0] = -flipped[:, 0]
        assert hypervolume(flipped, [0.0, 1.0, 1.0], [False, False, False]) == pytest.approx(hv)
