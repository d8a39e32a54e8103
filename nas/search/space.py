"""What is searched, as sets of shapes: enumeration, sampling, encoding, and the union / clipping of two spaces.
No search logic here.

A `StudentSpace` holds BERT shapes; a `MixedSpace` several student families (BERT slices and the families of
nas/students/arch.py): it is sampled family first, then the family's axes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from nas.spec.space import SearchSpace, StudentSpace
from nas.students.arch import AXES, Arch
from nas.students.shape import Shape


@dataclass(frozen=True)
class MixedSpace:
    """Several student families on one front: `bert` (a StudentSpace, or None) and {family: {axis: choices}}."""

    bert: StudentSpace | None
    others: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def families(self) -> list[str]:
        return (["bert"] if self.bert is not None else []) + list(self.others)

    def choices(self, family: str, axis: str) -> list[int]:
        return getattr(self.bert, axis) if family == "bert" else self.others[family][axis]


def searched_space(space: SearchSpace) -> StudentSpace | MixedSpace:
    """What the per-trial search explores: the BERT axes alone, or every family the space names."""
    others = space.other_families()
    if not others:
        return space.student
    return MixedSpace(space.student, {name: {a: list(getattr(sub, a)) for a in AXES[name]} for name, sub in others.items()})


def _family_shapes(space: MixedSpace, family: str) -> list:
    if family == "bert":
        return all_shapes(space.bert)
    axes = AXES[family]
    return [Arch.of(family, **dict(zip(axes, vals))) for vals in itertools.product(*(space.others[family][a] for a in axes))]


def all_shapes(space) -> list:
    if isinstance(space, MixedSpace):
        return [s for fam in space.families for s in _family_shapes(space, fam)]
    shapes = [Shape(l, h, a, f) for l, h, a, f in itertools.product(space.layers, space.hidden, space.heads, space.ffn)]
    return [s for s in shapes if s.is_valid()]


def with_valid_heads(space: StudentSpace, s: Shape) -> Shape | None:
    """s, or, where its hidden is not divisible by its heads, s with the space's valid head count nearest to its own;
    None where no head count of the space divides hidden."""
    if s.is_valid():
        return s
    ok = [a for a in space.heads if s.hidden % a == 0]
    return Shape(s.layers, s.hidden, min(ok, key=lambda a: abs(a - s.heads)), s.ffn) if ok else None


def sample_shape(space, rng: np.random.Generator):
    if isinstance(space, MixedSpace):  # family first, then its axes
        fam = space.families[int(rng.integers(len(space.families)))]
        if fam == "bert":
            return sample_shape(space.bert, rng)
        return Arch.of(fam, **{a: int(rng.choice(space.others[fam][a])) for a in AXES[fam]})
    while True:
        s = Shape(int(rng.choice(space.layers)), int(rng.choice(space.hidden)), int(rng.choice(space.heads)),
                  int(rng.choice(space.ffn)))
        if s.is_valid():
            return s


def sample_unique(space, n: int, rng: np.random.Generator, exclude: set[str] | None = None) -> list:
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
