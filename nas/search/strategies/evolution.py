"""NSGA-II over shapes, our own (the supernet schedule's default student search)."""

from __future__ import annotations

import numpy as np

from nas.search.pareto import crowding_distance, non_dominated_sort
from nas.search.space import MixedSpace, sample_shape, sample_unique, with_valid_heads
from nas.search.strategies.base import AXES, Strategy
from nas.spec.space import StudentSpace
from nas.students.arch import Arch
from nas.students.shape import Shape


class Evolution(Strategy):
    """NSGA-II over shapes: the population is the best `population` results by non-dominated rank then crowding distance;
    children come from binary tournaments, uniform crossover per axis and neighbour-step mutation, never repeating a shape.
    Until `population` results are in, it samples at random. In a space of several families (`MixedSpace`), parents of
    two families do not cross (the child is the first parent), and a mutation moves to a random shape of another
    family with probability `mutation` / 2 (family first), else steps along its own family's axes."""

    def __init__(self, space: StudentSpace | MixedSpace, seed: int, population: int = 12, mutation: float = 0.3, crossover: float = 0.9,
                 use_size: bool = False):
        super().__init__(space, seed)
        self.population_size = population
        self.mutation = mutation
        self.crossover = crossover
        self.use_size = use_size

    def _objs(self, o: dict) -> list[float]:
        return [o["metric"], o["latency_ms"]] + ([o.get("params", 0)] if self.use_size else [])

    def population(self) -> list[tuple[Shape, dict, int, float]]:
        """(shape, objectives, rank, crowding) of the survivors."""
        if not self.results:
            return []
        pts = [self._objs(o) for _, o in self.results]
        maximize = [True, False] + ([False] if self.use_size else [])
        out = []
        for rank, front in enumerate(non_dominated_sort(pts, maximize)):
            crowd = crowding_distance(pts, front)
            for i in sorted(front, key=lambda i: -crowd[i]):
                out.append((self.results[i][0], self.results[i][1], rank, crowd[i]))
                if len(out) == self.population_size:
                    return out
        return out

    def ask(self, n: int) -> list[Shape]:
        pop = self.population()
        if len(pop) < self.population_size:
            shapes = sample_unique(self.space, n, self.rng, self.seen)
            self.seen.update(s.key for s in shapes)
            return shapes
        children: list[Shape] = []
        tries = 0
        while len(children) < n and tries < 200 * n:
            tries += 1
            a, b = self._tournament(pop), self._tournament(pop)
            child = self._mutate(self._cross(a, b))
            if child.is_valid() and child.key not in self.seen:
                self.seen.add(child.key)
                children.append(child)
        if len(children) < n:  # the neighbourhood is exhausted: fill with fresh random shapes
            extra = sample_unique(self.space, n - len(children), self.rng, self.seen)
            self.seen.update(s.key for s in extra)
            children += extra
        return children

    def _tournament(self, pop) -> Shape:
        i, j = self.rng.integers(len(pop), size=2)
        a, b = pop[i], pop[j]
        if a[2] != b[2]:
            return a[0] if a[2] < b[2] else b[0]
        return a[0] if a[3] >= b[3] else b[0]

    def _cross(self, a, b):
        if self.rng.random() > self.crossover or a.family != b.family:
            return a
        if isinstance(a, Arch):
            return Arch.of(a.family, **{ax: (a if self.rng.random() < 0.5 else b)[ax] for ax, _ in a.dims})
        return Shape(*[getattr(a if self.rng.random() < 0.5 else b, ax) for ax in AXES])

    def _step(self, v: int, choices: list[int]) -> int:
        if self.rng.random() >= self.mutation:
            return v
        i = choices.index(v) if v in choices else int(np.argmin([abs(c - v) for c in choices]))
        return choices[int(np.clip(i + self.rng.choice([-1, 1]), 0, len(choices) - 1))]

    def _mutate(self, s):
        mixed = isinstance(self.space, MixedSpace)
        if mixed and len(self.space.families) > 1 and self.rng.random() < self.mutation / 2:
            others = [f for f in self.space.families if f != s.family]
            fam = others[int(self.rng.integers(len(others)))]
            return sample_shape(self.space.bert if fam == "bert" else MixedSpace(None, {fam: self.space.others[fam]}),
                                self.rng)
        if isinstance(s, Arch):
            return Arch.of(s.family, **{ax: self._step(v, self.space.choices(s.family, ax)) for ax, v in s.dims})
        bert = self.space.bert if mixed else self.space
        out = with_valid_heads(bert, Shape(*[self._step(getattr(s, ax), getattr(bert, ax)) for ax in AXES]))
        return out if out is not None else sample_shape(bert, self.rng)
