"""Random search: distinct shapes drawn uniformly (what a Ray Tune user writes with `tune.choice` per axis)."""

from __future__ import annotations

from nas.search.space import sample_unique
from nas.search.strategies.base import Strategy
from nas.students.shape import Shape


class RandomSearch(Strategy):
    def ask(self, n: int) -> list[Shape]:
        shapes = sample_unique(self.space, n, self.rng, self.seen)
        self.seen.update(s.key for s in shapes)
        return shapes
