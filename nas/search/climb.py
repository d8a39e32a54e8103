"""Climbing to a latency limit: under a budget the most accurate student is the largest one that still fits, but a
population-based strategy spreads its trials along the whole front (NSGA-II's crowding keeps the 1-layer extremes), so
with a few dozen trials the shapes just inside the limit may never be tried. The climb proposes, from the most accurate
candidate within the limits, its neighbours one axis step larger (and one layer deeper for one FFN step narrower) that
the latency predictor says fit; the caller scores them and asks again. Nothing here trains or measures."""

from __future__ import annotations

from nas.search.space import with_valid_heads
from nas.search.strategies.base import AXES
from nas.spec.space import StudentSpace
from nas.students.shape import Shape


def _step(choices: list[int], v: int, by: int) -> int | None:
    """The choice `by` steps from v in the sorted choices (v itself need not be one); None off either end."""
    up = [c for c in choices if c > v]
    down = [c for c in choices if c < v]
    if by > 0:
        return up[by - 1] if len(up) >= by else None
    return down[by] if len(down) >= -by else None


def larger_neighbours(space: StudentSpace, s: Shape) -> list[Shape]:
    """Shapes one step larger than s along one axis of the space, and one layer deeper with one FFN step less (depth
    for width, the trade that usually pays at a budget), each valid (heads repaired where hidden grew)."""
    out: list[Shape] = []
    for ax in AXES:
        v = _step(getattr(space, ax), getattr(s, ax), 1)
        if v is not None:
            out.append(Shape(**{**s.as_dict(), ax: v}))
    deeper, narrower = _step(space.layers, s.layers, 1), _step(space.ffn, s.ffn, -1)
    if deeper is not None and narrower is not None:
        out.append(Shape(deeper, s.hidden, s.heads, narrower))
    seen, unique = {s.key}, []  # a repair can lead back to s itself
    for c in (with_valid_heads(space, c) for c in out):
        if c is not None and c.key not in seen:
            seen.add(c.key)
            unique.append(c)
    return unique


def climb_candidates(space: StudentSpace, scored: list[tuple[Shape, float]], tried: set[str], fits, n: int) -> list[Shape]:
    """Up to n untried shapes to score next: the larger neighbours (`larger_neighbours`) that `fits` (a predicate:
    the latency predictor's verdict on the limit) of the most accurate of `scored` (shape, metric) that has any,
    walking down the ranking until one does. `scored` holds only candidates within the limits; [] when every one's
    fitting neighbourhood is tried."""
    for shape, _ in sorted(scored, key=lambda sm: -sm[1]):
        fresh = [c for c in larger_neighbours(space, shape) if c.key not in tried and fits(c)]
        if fresh:
            return fresh[:n]
    return []


__all__ = ["climb_candidates", "larger_neighbours"]
