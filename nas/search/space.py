"""What is searched, as sets of shapes: enumeration, sampling, encoding, and the union / clipping of two spaces.
No search logic here."""

from __future__ import annotations

import itertools

import numpy as np

from nas.spec.space import StudentSpace
from nas.students.shape import Shape


def all_shapes(space: StudentSpace) -> list[Shape]:
    shapes = [Shape(l, h, a, f) for l, h, a, f in itertools.product(space.layers, space.hidden, space.heads, space.ffn)]
    return [s for s in shapes if s.is_valid()]


def sample_shape(space: StudentSpace, rng: np.random.Generator) -> Shape:
    while True:
        s = Shape(int(rng.choice(space.layers)), int(rng.choice(space.hidden)), int(rng.choice(space.heads)),
                  int(rng.choice(space.ffn)))
        if s.is_valid():
            return s


def sample_unique(space: StudentSpace, n: int, rng: np.random.Generator, exclude: set[str] | None = None) -> list[Shape]:
    """Up to n distinct shapes not in `exclude` (by key); fewer when the space is smaller than that."""
    exclude = set(exclude or ())
    pool = [s for s in all_shapes(space) if s.key not in exclude]
    if len(pool) <= n:
        rng.shuffle(pool)
        return pool
    out: list[Shape] = []
    seen = set(exclude)
    while len(out) < n:
        s = sample_shape(space, rng)
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out


def encode(shape: Shape, space: StudentSpace) -> np.ndarray:
    """Shape as numbers in [0, 1] per axis (for predictors and distances)."""
    def norm(x, choices):
        lo, hi = min(choices), max(choices)
        return 0.0 if hi == lo else (x - lo) / (hi - lo)

    return np.array([norm(shape.layers, space.layers), norm(shape.hidden, space.hidden), norm(shape.heads, space.heads),
                     norm(shape.ffn, space.ffn)])


def union_space(a: StudentSpace, b: StudentSpace | None) -> StudentSpace:
    if b is None:
        return a
    return StudentSpace(layers=sorted(set(a.layers) | set(b.layers)), hidden=sorted(set(a.hidden) | set(b.hidden)),
                        heads=sorted(set(a.heads) | set(b.heads)), ffn=sorted(set(a.ffn) | set(b.ffn)))


def clip_space(space: StudentSpace, outer: Shape) -> tuple[StudentSpace | None, dict]:
    """The part of `space` inside `outer` on every axis, and the dropped choices by axis; (None, {axis: []}) naming the
    axes left without any choice when nothing fits."""
    axes = ("layers", "hidden", "heads", "ffn")
    kept = {ax: [v for v in getattr(space, ax) if v <= getattr(outer, ax)] for ax in axes}
    empty = {ax: [] for ax in axes if not kept[ax]}
    if empty:
        return None, empty
    dropped = {ax: sorted(set(getattr(space, ax)) - set(kept[ax])) for ax in axes}
    return StudentSpace(**kept), {ax: v for ax, v in dropped.items() if v}
