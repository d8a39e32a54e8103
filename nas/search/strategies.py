"""How shapes are searched: strategies behind one ask/tell interface."""

from __future__ import annotations

import numpy as np

from nas.search.space import sample_unique
from nas.spec import StudentSpace
from nas.supernet import Shape


class Strategy:
    """ask(n) proposes up to n shapes; tell(shape, objectives) feeds back a result (maximise metric, minimise latency)."""

    def __init__(self, space: StudentSpace, seed: int):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.seen: set[str] = set()

    def ask(self, n: int) -> list[Shape]:
        raise NotImplementedError

    def tell(self, shape: Shape, objectives: dict) -> None:
        self.seen.add(shape.key)


class RandomSearch(Strategy):
    def ask(self, n: int) -> list[Shape]:
        shapes = sample_unique(self.space, n, self.rng, self.seen)
        self.seen.update(s.key for s in shapes)
        return shapes


STRATEGIES = {"random": RandomSearch}


def make_strategy(name: str, space: StudentSpace, seed: int) -> Strategy:
    return STRATEGIES[name](space, seed)
