"""What is searched: student shapes (uniform per layer). Sampling, enumeration and encoding; no search logic here."""

from __future__ import annotations

import itertools

import numpy as np

from nas.spec import StudentSpace
from nas.supernet import Shape


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
